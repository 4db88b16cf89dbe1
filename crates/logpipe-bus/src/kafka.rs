//! The Kafka bus: the same topics on a Kafka-protocol broker cluster, through
//! librdkafka (rdkafka's bundled build).
//!
//! - **Producing.** One idempotent producer (`enable.idempotence`,
//!   `acks=all`). `append` resolves only when every record of the call has a
//!   delivery report; a full local queue or a broker that does not confirm
//!   within `delivery_timeout` is [`BusError::Busy`] (HTTP 503 with
//!   `Retry-After`), never a silent drop. Each record goes to the partition
//!   [`partition_for_key`] picks, the hash Kafka's Java clients use, so keys
//!   land where they land on the embedded bus and for other producers.
//! - **Topics.** Created at start with the configured partitions,
//!   replication and retention (no reliance on broker auto-creation);
//!   existing topics are kept and a difference is logged.
//! - **Consuming.** librdkafka serves rebalances inside `poll`, which runs
//!   on a blocking thread. The rebalance callback hands the event to the
//!   job (through [`Consumer::rebalance`]) and waits until the job has
//!   committed (revoke) or said where each partition starts (assign): the
//!   lake commit, not Kafka's committed offset, is the source of truth.
//!   Kafka offsets are committed after each lake commit, for lag monitoring.
//!   The group rebalances cooperatively by default (`cooperative-sticky`:
//!   only the partitions that move are revoked and assigned); the eager
//!   strategies (`range`, `roundrobin`) work as well.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use logpipe_core::partition::partition_for_key;
use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::{
    Bus, BusError, BusRecord, ConsumedRecord, Consumer, Headers, Rebalance, Result, TopicPartition,
    TopicSpec,
};

/// Metadata and watermark requests wait at most this long.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the log-end offsets (for lag) are refreshed in the background.
const END_OFFSETS_REFRESH: Duration = Duration::from_secs(2);

/// How to reach the cluster and what to create there.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    pub replication_factor: u32,
    /// librdkafka `message.timeout.ms`: how long an append may wait.
    pub delivery_timeout: Duration,
    /// librdkafka `session.timeout.ms` of group consumers.
    pub session_timeout: Duration,
    /// Passed through to every client; they override logpipe's settings.
    pub properties: BTreeMap<String, String>,
}

/// Forwards librdkafka's log lines and global errors to `tracing`, and
/// remembers the newest reason a broker connection failed. librdkafka
/// retries a refused password or an unverified certificate forever and a
/// metadata request then only times out; with the reason kept, "cannot reach
/// the brokers" says why.
#[derive(Clone, Default)]
pub struct LogContext {
    last_failure: Arc<Mutex<Option<ConnectionFailure>>>,
}

/// Why a broker connection failed, and when.
#[derive(Clone, Debug)]
struct ConnectionFailure {
    at: Instant,
    code: Option<RDKafkaErrorCode>,
    reason: String,
}

impl LogContext {
    /// The newest connection failure since `since`, with what to check.
    fn failure_since(&self, since: Instant) -> Option<String> {
        let failure = lock(&self.last_failure).clone()?;
        if failure.at < since {
            return None;
        }
        let check = match failure.code {
            Some(RDKafkaErrorCode::Authentication) => {
                "check sasl.mechanism, sasl.username and sasl.password in [bus.kafka.properties]"
            }
            Some(RDKafkaErrorCode::SSL) => {
                "check security.protocol and the ssl.* settings (ssl.ca.location) in [bus.kafka.properties]"
            }
            _ => "check bus.kafka.brokers and security.protocol in [bus.kafka.properties]",
        };
        Some(format!("{}; {check}", failure.reason))
    }
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker connections come and go (a restarted broker): librdkafka
        // reconnects by itself; appends that cannot wait fail as Busy.
        tracing::warn!(target: "librdkafka", %error, "{reason}");
        let code = error.rdkafka_error_code();
        // "All brokers are down" follows the failure that says why.
        if code != Some(RDKafkaErrorCode::AllBrokersDown) {
            *lock(&self.last_failure) = Some(ConnectionFailure {
                at: Instant::now(),
                code,
                reason: reason.to_string(),
            });
        }
    }
}

/// The Kafka implementation of [`Bus`].
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaOptions,
    /// Shared by every client of this bus (see [`LogContext`]).
    context: LogContext,
    /// Replaced when it hits a fatal error (see [`Inner::replace_producer`]).
    producer: Mutex<Arc<FutureProducer<LogContext>>>,
    /// Partition counts of the topics this process created or looked up.
    partitions: Mutex<HashMap<String, u32>>,
    /// Log-end offsets per topic, refreshed in the background.
    end_offsets: Mutex<HashMap<String, Vec<u64>>>,
}

impl KafkaOptions {
    /// A client configuration with logpipe's settings, then the user's.
    fn client_config(&self, settings: &[(&str, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in settings {
            config.set(*key, value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

fn kafka_error(what: &str, error: KafkaError) -> BusError {
    BusError::Kafka(format!("{what}: {error}"))
}

impl KafkaBus {
    /// Connects to the cluster (checks that a broker answers).
    pub async fn connect(options: KafkaOptions) -> Result<KafkaBus> {
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

    pub fn options(&self) -> &KafkaOptions {
        &self.inner.options
    }

    /// Cluster metadata, off the async reactor.
    async fn metadata(&self, topic: Option<&str>) -> Result<ClusterView> {
        let inner = self.inner.clone();
        let topic = topic.map(str::to_string);
        tokio::task::spawn_blocking(move || inner.metadata(topic.as_deref()))
            .await
            .map_err(|e| BusError::Kafka(e.to_string()))?
    }

    fn admin(&self) -> Result<AdminClient<LogContext>> {
        self.inner
            .options
            .client_config(&[])
            .create_with_context(self.inner.context.clone())
            .map_err(|e| kafka_error("cannot create the Kafka admin client", e))
    }

    /// Logs where existing topics differ from their specs.
    async fn verify_topics(&self, existing: &[(&TopicSpec, &TopicView)]) {
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

fn new_producer(
    options: &KafkaOptions,
    context: &LogContext,
) -> Result<FutureProducer<LogContext>> {
    options
        .client_config(&[
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            (
                "message.timeout.ms",
                options.delivery_timeout.as_millis().to_string(),
            ),
            ("linger.ms", "5".into()),
            ("client.id", "logpipe-collector".into()),
        ])
        .create_with_context(context.clone())
        .map_err(|e| kafka_error("cannot create the Kafka producer", e))
}

impl KafkaBus {
    async fn produce(
        &self,
        producer: &Arc<FutureProducer<LogContext>>,
        topic: &str,
        partitions: u32,
        records: &[BusRecord],
    ) -> Result<()> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let partition = partition_for_key(&record.key, partitions) as i32;
            let mut message = FutureRecord::to(topic)
                .partition(partition)
                .key(&record.key[..])
                .payload(&record.value[..]);
            if !record.headers.is_empty() {
                message = message.headers(kafka_headers(&record.headers));
            }
            match producer.send_result(message) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(BusError::Busy(
                        "the Kafka producer queue is full (the brokers are slower than the input)"
                            .into(),
                    ));
                }
                Err((error, _)) => {
                    self.inner.replace_producer_if_broken(producer, &error);
                    return Err(BusError::Busy(format!(
                        "the Kafka producer refused: {error}"
                    )));
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    self.inner.replace_producer_if_broken(producer, &error);
                    return Err(BusError::Busy(format!(
                        "the Kafka brokers did not confirm the records within {:?}: {error}",
                        self.inner.options.delivery_timeout
                    )));
                }
                Err(_) => return Err(BusError::Closed),
            }
        }
        Ok(())
    }
}

/// What the cluster metadata says, copied out of librdkafka's structures.
struct ClusterView {
    brokers: usize,
    topics: HashMap<String, TopicView>,
}

struct TopicView {
    partitions: u32,
    replicas: usize,
}

impl Inner {
    fn producer(&self) -> Arc<FutureProducer<LogContext>> {
        lock(&self.producer).clone()
    }

    /// An idempotent producer whose messages timed out must bump its epoch;
    /// a broker that refuses (tansu answers ProducerFenced) leaves it in a
    /// state where every send fails, fatal or not. librdkafka's answer is a
    /// new producer instance: records already refused were never
    /// acknowledged, so nothing acknowledged is affected.
    fn replace_producer_if_broken(
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

    fn metadata(&self, topic: Option<&str>) -> Result<ClusterView> {
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

    fn partitions(&self, topic: &str) -> Result<u32> {
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

    fn refresh_end_offsets(&self) {
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Refreshes log-end offsets until the bus is dropped.
fn spawn_end_offsets_refresh(inner: Weak<Inner>) {
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

#[async_trait]
impl Bus for KafkaBus {
    async fn create_topics(&self, specs: &[TopicSpec]) -> Result<()> {
        let view = self.metadata(None).await?;
        let replication = self.inner.options.replication_factor;
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
        if replication as usize > view.brokers {
            return Err(BusError::Misconfigured(format!(
                "bus.kafka.replication_factor is {replication} but the cluster at {} has {} broker{}; \
                 a topic cannot have more replicas than brokers (the seed's InvalidReplicationFactor). \
                 Set bus.kafka.replication_factor to at most {}",
                self.inner.options.brokers,
                view.brokers,
                if view.brokers == 1 { "" } else { "s" },
                view.brokers
            )));
        }
        let settings: Vec<(String, String)> = missing
            .iter()
            .map(|spec| {
                let bytes = if spec.retention_bytes == 0 {
                    "-1".to_string()
                } else {
                    spec.retention_bytes.to_string()
                };
                (spec.retention.as_millis().to_string(), bytes)
            })
            .collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&settings)
            .map(|(spec, (retention_ms, retention_bytes))| {
                NewTopic::new(
                    &spec.name,
                    spec.partitions as i32,
                    TopicReplication::Fixed(replication as i32),
                )
                .set("retention.ms", retention_ms)
                .set("retention.bytes", retention_bytes)
                // Explicit, not the broker's default: a compacted topic
                // keeps only the newest record per key, and logpipe's keys
                // are service names and user ids.
                .set("cleanup.policy", "delete")
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
        self.produce(&self.inner.producer(), topic, partitions, &records)
            .await
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Subscribed in a consumer group: the group assigns partitions.
    Group,
    /// Every partition assigned by hand; no group membership.
    Reader,
}

/// A rebalance waiting for the job, and where to send its answer.
struct PendingRebalance {
    event: Rebalance,
    reply: std_mpsc::SyncSender<Vec<(TopicPartition, Option<u64>)>>,
}

/// Shared between the consumer and its rebalance callback.
struct Shared {
    requests: mpsc::UnboundedSender<PendingRebalance>,
    /// Set once the job is done: rebalances then proceed without asking.
    closing: AtomicBool,
    /// Partitions revoked since the poll thread last looked: it drops what
    /// it read from them before the revoke (the job starts them again
    /// where it says, if they come back). Written by the rebalance
    /// callback, which librdkafka runs inside that thread's `poll`.
    revoked: Mutex<Vec<TopicPartition>>,
    assignment: Mutex<Vec<TopicPartition>>,
}

/// The rdkafka context of logpipe's consumers.
struct RebalanceContext {
    shared: Arc<Shared>,
    log: LogContext,
}

impl ClientContext for RebalanceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

/// Whether the group rebalances incrementally (`cooperative-sticky`):
/// librdkafka then refuses `assign`/`unassign` for `incremental_*`.
fn is_cooperative(consumer: &BaseConsumer<RebalanceContext>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: e.topic().to_string(),
            partition: e.partition().max(0) as u32,
        })
        .collect()
}

impl RebalanceContext {
    /// Hands `event` to the job and blocks this (librdkafka's poll) thread
    /// until the job answers.
    fn ask(&self, event: Rebalance) -> Vec<(TopicPartition, Option<u64>)> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Vec::new();
        }
        let (reply, answer) = std_mpsc::sync_channel(1);
        if self
            .shared
            .requests
            .send(PendingRebalance { event, reply })
            .is_err()
        {
            return Vec::new();
        }
        // The job answers, or `close` does (it answers every request that
        // arrives while it waits for the poll), or the consumer is dropped
        // and the reply's sender with it.
        answer.recv().unwrap_or_default()
    }

    /// Gives `revoked` up: the job commits what it read of them, librdkafka
    /// stops fetching them, and the poll thread drops what it read of them
    /// but did not hand over yet.
    fn give_up(
        &self,
        consumer: &BaseConsumer<Self>,
        revoked: Vec<TopicPartition>,
        cooperative: bool,
    ) {
        tracing::info!(?revoked, cooperative, "Kafka group revokes partitions");
        if !revoked.is_empty() {
            self.ask(Rebalance::Revoke(revoked.clone()));
        }
        let done = if cooperative {
            let mut list = TopicPartitionList::new();
            for tp in &revoked {
                list.add_partition(&tp.topic, tp.partition as i32);
            }
            consumer.incremental_unassign(&list)
        } else {
            consumer.unassign()
        };
        if let Err(error) = done {
            tracing::error!(%error, "Kafka unassign failed");
        }
        let held = {
            let mut assignment = lock(&self.shared.assignment);
            assignment.retain(|tp| !revoked.contains(tp));
            assignment.len()
        };
        tracing::info!(held, "Kafka group revoked partitions");
        lock(&self.shared.revoked).extend(revoked);
    }
}

impl ConsumerContext for RebalanceContext {
    /// Eager protocols (`range`, `roundrobin`: every rebalance revokes all
    /// partitions and assigns a full set) and the cooperative one
    /// (`cooperative-sticky`: only the partitions that move are revoked or
    /// assigned, the others keep being read) are both served: the job sees
    /// the partitions that come and go either way.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let cooperative = is_cooperative(consumer);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions_of(list);
                // A cooperative rebalance can assign nothing new to this
                // member: nothing for the job to do.
                let starts = if assigned.is_empty() {
                    Vec::new()
                } else {
                    self.ask(Rebalance::Assign(assigned.clone()))
                };
                let starts: HashMap<TopicPartition, Option<u64>> = starts.into_iter().collect();
                for tp in &assigned {
                    let offset = match starts.get(tp).copied().flatten() {
                        Some(offset) => Offset::Offset(offset as i64),
                        None => Offset::Beginning,
                    };
                    if let Err(error) =
                        list.set_partition_offset(&tp.topic, tp.partition as i32, offset)
                    {
                        tracing::error!(%error, ?tp, "cannot set a start offset");
                    }
                }
                let done = if cooperative {
                    consumer.incremental_assign(list)
                } else {
                    consumer.assign(list)
                };
                if let Err(error) = done {
                    tracing::error!(%error, "Kafka assign failed");
                }
                let mut assignment = lock(&self.shared.assignment);
                if !cooperative {
                    assignment.clear();
                }
                assignment.extend(assigned.iter().cloned());
                tracing::info!(
                    ?assigned,
                    cooperative,
                    held = assignment.len(),
                    "Kafka group assigned partitions"
                );
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.give_up(consumer, partitions_of(list), cooperative);
            }
            other => {
                // librdkafka (2.12) calls this only with the two codes above;
                // its docs ask an application to drop its assignment on any
                // other. Do it the way a revoke does: the job commits what
                // it read first, and a cooperative group is answered with
                // `incremental_unassign` (it refuses `unassign`).
                tracing::error!(error = ?other, "Kafka rebalance failed; giving up every partition");
                let held = lock(&self.shared.assignment).clone();
                self.give_up(consumer, held, cooperative);
            }
        }
    }
}

type PollResult = std::result::Result<Vec<ConsumedRecord>, KafkaError>;

/// A [`Consumer`] on Kafka (see the module docs).
pub struct KafkaConsumer {
    consumer: Arc<BaseConsumer<RebalanceContext>>,
    shared: Arc<Shared>,
    membership: Membership,
    requests: mpsc::UnboundedReceiver<PendingRebalance>,
    pending: Option<PendingRebalance>,
    /// The poll running on a blocking thread; kept across calls so a
    /// cancelled `poll` loses nothing.
    inflight: Option<tokio::task::JoinHandle<PollResult>>,
    /// Next offset per partition as the job sees it (after the records
    /// returned, or where it seeked).
    positions: HashMap<TopicPartition, u64>,
    /// A `seek` happened: re-assign before the next poll.
    reassign: bool,
}

impl KafkaConsumer {
    fn open(bus: &KafkaBus, group: &str, topics: &[&str], membership: Membership) -> Result<Self> {
        let options = &bus.inner.options;
        let (sender, requests) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            requests: sender,
            closing: AtomicBool::new(false),
            revoked: Mutex::new(Vec::new()),
            assignment: Mutex::new(Vec::new()),
        });
        let consumer: BaseConsumer<RebalanceContext> = options
            .client_config(&[
                ("group.id", group.to_string()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                // The job decides where to start; an offset gone by
                // retention is reported, not silently reset.
                ("auto.offset.reset", "error".into()),
                (
                    "session.timeout.ms",
                    options.session_timeout.as_millis().to_string(),
                ),
                (
                    "heartbeat.interval.ms",
                    (options.session_timeout.as_millis() / 5)
                        .max(100)
                        .to_string(),
                ),
                // Incremental rebalances: partitions that do not move keep
                // being read while others change hands. `range` (eager) in
                // [bus.kafka.properties] works too.
                ("partition.assignment.strategy", "cooperative-sticky".into()),
                ("client.id", format!("logpipe-{group}")),
            ])
            .create_with_context(RebalanceContext {
                shared: shared.clone(),
                log: bus.inner.context.clone(),
            })
            .map_err(|e| kafka_error("cannot create the Kafka consumer", e))?;
        match membership {
            Membership::Group => consumer
                .subscribe(topics)
                .map_err(|e| kafka_error("subscribing failed", e))?,
            // Assigned by `apply_positions` before the first poll.
            Membership::Reader => {
                let mut all = Vec::new();
                for topic in topics {
                    for partition in 0..bus.inner.partitions(topic)? {
                        all.push(TopicPartition {
                            topic: topic.to_string(),
                            partition,
                        });
                    }
                }
                *lock(&shared.assignment) = all;
            }
        }
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            shared,
            membership,
            requests,
            pending: None,
            inflight: None,
            // No position yet: a partition starts at the oldest kept offset.
            positions: HashMap::new(),
            reassign: membership == Membership::Reader,
        })
    }

    /// Assigns the current partitions at `positions` (how `seek` takes
    /// effect: reliable whatever state the fetcher is in).
    fn apply_positions(&mut self) -> Result<()> {
        let assignment = lock(&self.shared.assignment).clone();
        let mut list = TopicPartitionList::new();
        for tp in &assignment {
            let offset = match self.positions.get(tp) {
                Some(offset) => Offset::Offset(*offset as i64),
                None => Offset::Beginning,
            };
            list.add_partition_offset(&tp.topic, tp.partition as i32, offset)
                .map_err(|e| kafka_error("building the assignment failed", e))?;
        }
        let assigned = if is_cooperative(&self.consumer) {
            // A cooperative group refuses `assign`: take the partitions out
            // and put them back at the new positions.
            self.consumer
                .incremental_unassign(&list)
                .and_then(|()| self.consumer.incremental_assign(&list))
        } else {
            self.consumer.assign(&list)
        };
        assigned.map_err(|e| kafka_error("assigning partitions failed", e))?;
        self.reassign = false;
        Ok(())
    }

    /// A broker may answer a fetch below a partition's oldest kept offset
    /// with the records that follow instead of `OFFSET_OUT_OF_RANGE` (tansu
    /// 0.6 does), which would skip records deleted by retention without a
    /// word. So the first record of each partition in a poll must be the one
    /// asked for. Where it is later, the oldest kept offset tells a gap left
    /// by retention (records lost: `OffsetOutOfRange`, which
    /// `lake.on_data_loss` handles) from one left by transaction markers or
    /// aborted transactions (nothing lost). Spark's Kafka source checks the
    /// same way. Costs a watermark request only when there is a gap.
    async fn check_no_records_skipped(&self, spans: &[PartitionSpan]) -> Result<()> {
        let gaps: Vec<(TopicPartition, u64)> = spans
            .iter()
            .filter_map(|span| {
                let expected = *self.positions.get(&span.partition)?;
                (span.first > expected).then(|| (span.partition.clone(), expected))
            })
            .collect();
        if gaps.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            for (tp, requested) in gaps {
                let log_start = low_watermark(&consumer, &tp.topic, tp.partition)?;
                if log_start > requested {
                    return Err(BusError::OffsetOutOfRange {
                        topic: tp.topic,
                        partition: tp.partition,
                        requested,
                        log_start,
                    });
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| BusError::Kafka(format!("the watermark thread failed: {e}")))?
    }

    /// Which partition an offset-out-of-range error is about, and why: the
    /// first whose position lies below the oldest kept offset (retention
    /// deleted records the job had not read) or past the end of the log
    /// (the broker lost records the lake already holds, e.g. a topic that
    /// was deleted and created again).
    fn out_of_range(&self) -> BusError {
        for (tp, requested) in &self.positions {
            let Ok((low, high)) =
                self.consumer
                    .fetch_watermarks(&tp.topic, tp.partition as i32, METADATA_TIMEOUT)
            else {
                continue;
            };
            let (low, high) = (low.max(0) as u64, high.max(0) as u64);
            if *requested < low {
                return BusError::OffsetOutOfRange {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    requested: *requested,
                    log_start: low,
                };
            }
            if *requested > high {
                return BusError::OffsetBeyondEnd {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    requested: *requested,
                    log_end: high,
                };
            }
        }
        BusError::Kafka(
            "the broker reported an offset out of range, but every partition's position is \
             within its oldest and newest offsets"
                .into(),
        )
    }
}

/// The librdkafka form of a record's headers. Header names are Kafka
/// strings; a name that is not UTF-8 cannot have come from [`Headers`]'s
/// constructors and is skipped.
fn kafka_headers(headers: &Headers) -> OwnedHeaders {
    headers
        .iter()
        .filter_map(|(name, value)| Some((std::str::from_utf8(name).ok()?, value)))
        .fold(OwnedHeaders::new(), |out, (key, value)| {
            out.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// A Kafka message's headers as one block, sized exactly (one
/// allocation).
fn our_headers(headers: &rdkafka::message::BorrowedHeaders) -> Headers {
    let pairs = || headers.iter().map(|h| (h.key, h.value.unwrap_or_default()));
    let size = pairs().map(|(k, v)| 8 + k.len() + v.len()).sum();
    Headers::from_pairs(size, pairs())
}

/// The oldest kept offset of a partition (its low watermark).
fn low_watermark(
    consumer: &BaseConsumer<RebalanceContext>,
    topic: &str,
    partition: u32,
) -> Result<u64> {
    consumer
        .fetch_watermarks(topic, partition as i32, METADATA_TIMEOUT)
        .map(|(low, _)| low.max(0) as u64)
        .map_err(|e| kafka_error("reading the oldest offsets failed", e))
}

/// The first and last offset one poll returned for a partition, and how
/// many offsets between them it passed over.
struct PartitionSpan {
    partition: TopicPartition,
    first: u64,
    last: u64,
    skipped: u64,
}

/// One pass over a poll's records (in offset order within a partition):
/// where each partition's records start and end, and the offsets missing
/// in between (each gap is logged at debug level).
fn partition_spans(records: &[ConsumedRecord]) -> Vec<PartitionSpan> {
    let mut spans: Vec<PartitionSpan> = Vec::new();
    for record in records {
        match spans.iter_mut().find(|span| {
            span.partition.partition == record.partition && *span.partition.topic == *record.topic
        }) {
            Some(span) => {
                span.skipped += passed_over(&span.partition, span.last + 1, record.offset);
                span.last = span.last.max(record.offset);
            }
            None => spans.push(PartitionSpan {
                partition: TopicPartition {
                    topic: record.topic.to_string(),
                    partition: record.partition,
                },
                first: record.offset,
                last: record.offset,
                skipped: 0,
            }),
        }
    }
    spans
}

/// How many offsets lie in `from..to` (none when `to <= from`), logged at
/// debug level with the partition when there are some.
fn passed_over(partition: &TopicPartition, from: u64, to: u64) -> u64 {
    let skipped = to.saturating_sub(from);
    if skipped > 0 {
        tracing::debug!(
            topic = %partition.topic,
            partition = partition.partition,
            from,
            to,
            "the broker passed over offsets"
        );
    }
    skipped
}

/// Counts the offsets passed over in `spans`, per topic, in
/// `logpipe_bus_offsets_skipped_total`: those between the records of a
/// poll and those between a partition's position and its first record
/// (`positions`, before this poll moves them). Kafka leaves such gaps for
/// transaction markers and compacted records; with plain producers and
/// `cleanup.policy=delete` topics, any gap is a record the broker did not
/// return, which no later check can notice (the lake's commit chain
/// follows offsets, not gaps).
fn count_skipped(spans: &[PartitionSpan], positions: &HashMap<TopicPartition, u64>) {
    for span in spans {
        let before = positions.get(&span.partition).map_or(0, |expected| {
            passed_over(&span.partition, *expected, span.first)
        });
        let skipped = span.skipped + before;
        if skipped == 0 {
            continue;
        }
        if let Some(kind) = logpipe_core::RecordKind::of_topic(&span.partition.topic) {
            logpipe_core::metrics::metrics()
                .bus_offsets_skipped
                .add(kind, skipped);
        }
    }
}

/// Polls until `max` records or `timeout`, on a blocking thread. Records
/// read from a partition before it was revoked are dropped: if it comes
/// back, it restarts where the job says.
fn poll_blocking(
    consumer: &BaseConsumer<RebalanceContext>,
    shared: &Shared,
    max: usize,
    timeout: Duration,
) -> PollResult {
    let deadline = Instant::now() + timeout;
    let mut out: Vec<ConsumedRecord> = Vec::new();
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    loop {
        let wait = if out.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        let polled = consumer.poll(wait);
        {
            let mut revoked = lock(&shared.revoked);
            if !revoked.is_empty() {
                out.retain(|record| {
                    !revoked
                        .iter()
                        .any(|tp| tp.partition == record.partition && *tp.topic == *record.topic)
                });
                revoked.clear();
            }
        }
        match polled {
            Some(Ok(message)) => {
                let topic = match topics.get(message.topic()) {
                    Some(topic) => topic.clone(),
                    None => {
                        let topic: Arc<str> = Arc::from(message.topic());
                        topics.insert(message.topic().to_string(), topic.clone());
                        topic
                    }
                };
                out.push(ConsumedRecord {
                    topic,
                    partition: message.partition().max(0) as u32,
                    offset: message.offset().max(0) as u64,
                    key: Bytes::copy_from_slice(message.key().unwrap_or_default()),
                    value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                    headers: message.headers().map(our_headers).unwrap_or_default(),
                });
                // Hand over what arrived when the caller's time is up, even
                // if more keeps trickling in (a slow broker would otherwise
                // hold a flush back until `max` records had arrived).
                if out.len() >= max || Instant::now() >= deadline {
                    return Ok(out);
                }
            }
            Some(Err(error)) => {
                if is_out_of_range(&error) {
                    return Err(error);
                }
                tracing::warn!(%error, "Kafka consumer error (librdkafka retries by itself)");
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            None => {
                if !out.is_empty() || Instant::now() >= deadline {
                    return Ok(out);
                }
            }
        }
    }
}

fn is_out_of_range(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}

#[async_trait]
impl Consumer for KafkaConsumer {
    fn assignment(&self) -> Vec<TopicPartition> {
        lock(&self.shared.assignment).clone()
    }

    fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let tp = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        if !lock(&self.shared.assignment).contains(&tp) {
            return Err(BusError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            });
        }
        self.positions.insert(tp, offset);
        self.reassign = true;
        Ok(())
    }

    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        if self.pending.is_some() {
            return Ok(Vec::new());
        }
        if self.inflight.is_none() {
            if self.reassign {
                self.apply_positions()?;
            }
            let consumer = self.consumer.clone();
            let shared = self.shared.clone();
            self.inflight = Some(tokio::task::spawn_blocking(move || {
                poll_blocking(&consumer, &shared, max_records, timeout)
            }));
        }
        let Some(task) = self.inflight.as_mut() else {
            return Ok(Vec::new());
        };
        let joined = tokio::select! {
            joined = task => joined,
            Some(request) = self.requests.recv() => {
                self.pending = Some(request);
                return Ok(Vec::new());
            }
        };
        self.inflight = None;
        let records = match joined {
            Ok(Ok(records)) => records,
            Ok(Err(error)) if is_out_of_range(&error) => return Err(self.out_of_range()),
            Ok(Err(error)) => return Err(kafka_error("polling failed", error)),
            Err(error) => {
                return Err(BusError::Kafka(format!("the poll thread failed: {error}")));
            }
        };
        let spans = partition_spans(&records);
        self.check_no_records_skipped(&spans).await?;
        count_skipped(&spans, &self.positions);
        // The last record of each partition sets its position.
        for span in spans {
            self.positions.insert(span.partition, span.last + 1);
        }
        Ok(records)
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        let assignment = lock(&self.shared.assignment).clone();
        let mut list = TopicPartitionList::new();
        for (tp, offset) in offsets {
            if assignment.contains(tp) {
                list.add_partition_offset(
                    &tp.topic,
                    tp.partition as i32,
                    Offset::Offset(*offset as i64),
                )
                .map_err(|e| kafka_error("building the commit failed", e))?;
            }
        }
        if list.count() == 0 {
            return Ok(());
        }
        match self.consumer.commit(&list, CommitMode::Async) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(error) => Err(kafka_error("committing offsets failed", error)),
        }
    }

    fn start_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        let partitions = self
            .consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| kafka_error("reading metadata failed", e))?
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        (0..partitions)
            .map(|partition| low_watermark(&self.consumer, topic, partition as u32))
            .collect()
    }

    fn rebalance(&self) -> Option<Rebalance> {
        self.pending.as_ref().map(|p| p.event.clone())
    }

    fn rebalance_done(&mut self, starts: Vec<(TopicPartition, Option<u64>)>) -> Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        match &pending.event {
            Rebalance::Revoke(revoked) => {
                for tp in revoked {
                    self.positions.remove(tp);
                }
            }
            Rebalance::Assign(_) => {
                for (tp, start) in &starts {
                    if let Some(start) = start {
                        self.positions.insert(tp.clone(), *start);
                    }
                }
            }
        }
        // The callback may already have given up waiting (consumer closing).
        let _ = pending.reply.send(starts);
        Ok(())
    }

    async fn close(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        if let Some(pending) = self.pending.take() {
            let _ = pending.reply.send(Vec::new());
        }
        if let Some(mut task) = self.inflight.take() {
            // A rebalance callback that began before `closing` was set may
            // be waiting for an answer inside this poll: answer it, or the
            // poll never ends.
            loop {
                tokio::select! {
                    _ = &mut task => break,
                    Some(request) = self.requests.recv() => {
                        let _ = request.reply.send(Vec::new());
                    }
                }
            }
        }
        let consumer = self.consumer.clone();
        let membership = self.membership;
        // Leave the group and let librdkafka finish it (dropping a
        // subscribed consumer without this can hang).
        let _ = tokio::task::spawn_blocking(move || {
            match membership {
                Membership::Group => consumer.unsubscribe(),
                Membership::Reader => {
                    let _ = consumer.unassign();
                }
            }
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(50));
            }
        })
        .await;
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // A job that failed without `close`: let any waiting rebalance go.
        self.shared.closing.store(true, Ordering::Release);
        if let Some(pending) = self.pending.take() {
            let _ = pending.reply.send(Vec::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &Arc<str>, partition: u32, offset: u64) -> ConsumedRecord {
        ConsumedRecord {
            topic: topic.clone(),
            partition,
            offset,
            key: Bytes::new(),
            value: Bytes::new(),
            headers: Headers::default(),
        }
    }

    #[test]
    fn spans_follow_interleaved_partitions_and_topics() {
        let (logs, events): (Arc<str>, Arc<str>) = ("logs.raw".into(), "events.activity".into());
        let records = [
            record(&logs, 0, 7),
            record(&logs, 1, 3),
            record(&events, 0, 10),
            record(&logs, 0, 8),
            record(&logs, 1, 4),
            record(&logs, 0, 9),
        ];
        let spans: Vec<(String, u32, u64, u64)> = partition_spans(&records)
            .into_iter()
            .map(|s| (s.partition.topic, s.partition.partition, s.first, s.last))
            .collect();
        assert_eq!(
            spans,
            [
                ("logs.raw".to_string(), 0, 7, 9),
                ("logs.raw".to_string(), 1, 3, 4),
                ("events.activity".to_string(), 0, 10, 10),
            ]
        );
        assert!(partition_spans(&[]).is_empty());
    }

    #[test]
    fn offsets_passed_over_are_counted_per_topic() {
        let (logs, events): (Arc<str>, Arc<str>) = ("logs.raw".into(), "events.activity".into());
        // logs.raw/0 was asked for from 5: 6 and 9..=10 are missing; 1 has
        // no position (just assigned), so its first record counts nothing.
        let records = [
            record(&logs, 0, 5),
            record(&logs, 0, 7),
            record(&logs, 1, 40),
            record(&logs, 0, 8),
            record(&logs, 0, 11),
            record(&events, 2, 12),
        ];
        let spans = partition_spans(&records);
        let skipped: Vec<u64> = spans.iter().map(|s| s.skipped).collect();
        assert_eq!(skipped, [3, 0, 0]);
        // events.activity/2 was asked for from 10: 10 and 11 are missing.
        let positions = HashMap::from([
            (
                TopicPartition {
                    topic: "logs.raw".into(),
                    partition: 0,
                },
                5,
            ),
            (
                TopicPartition {
                    topic: "events.activity".into(),
                    partition: 2,
                },
                10,
            ),
        ]);
        let counted = || {
            let metrics = logpipe_core::metrics::metrics();
            [
                logpipe_core::RecordKind::Log,
                logpipe_core::RecordKind::Event,
            ]
            .map(|kind| metrics.bus_offsets_skipped.get(kind))
        };
        let before = counted();
        count_skipped(&spans, &positions);
        let after = counted();
        assert_eq!([after[0] - before[0], after[1] - before[1]], [3, 2]);
    }
}
