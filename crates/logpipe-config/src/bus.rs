//! `[bus]`: which bus carries the topics, and each kind's settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

/// Which bus implementation carries the topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// The on-disk log inside this process (`DIR/bus`).
    Embedded,
    /// A Kafka-protocol broker cluster (`[bus.kafka]`).
    Kafka,
}

impl std::str::FromStr for BusKind {
    type Err = String;

    fn from_str(text: &str) -> Result<BusKind, String> {
        match text {
            "embedded" => Ok(BusKind::Embedded),
            "kafka" => Ok(BusKind::Kafka),
            other => Err(format!("{other:?} is not a bus kind (embedded or kafka)")),
        }
    }
}

/// `[bus]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub kind: BusKind,
    pub embedded: EmbeddedBusConfig,
    pub kafka: KafkaBusConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Embedded,
            embedded: EmbeddedBusConfig::default(),
            kafka: KafkaBusConfig::default(),
        }
    }
}

/// `[bus.kafka]`: a Kafka-protocol broker cluster (Apache Kafka, Redpanda, a
/// managed service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaBusConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Replication factor of the topics logpipe creates (a topic's
    /// `replication_factor` in `[topics.*]` overrides it). It cannot exceed
    /// the number of brokers.
    pub replication_factor: u32,
    /// `min.insync.replicas` of the topics logpipe creates: with `acks=all`
    /// (logpipe's producer) a write is confirmed once this many replicas
    /// hold it, and refused while fewer are in sync. 2 with a replication
    /// factor of 3 survives the loss of one broker. Unset: the broker's
    /// default. A topic's `min_insync_replicas` overrides it.
    pub min_insync_replicas: Option<u32>,
    /// Consumer group of the raw→lake job (its members share the partitions).
    pub group: String,
    /// How long the collector waits for the broker to confirm a request's
    /// records before answering 503 (librdkafka `message.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// A group member that sends no heartbeat for this long is presumed dead
    /// and its partitions go to the others (`session.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Write each request's records in a Kafka transaction, committed
    /// before the 2xx and aborted before a 503, so a refused request leaves
    /// nothing any `read_committed` reader sees. Off by default: it costs
    /// more than 10 % of throughput on the benchmark machine
    /// (docs/BENCHMARKS.md); without it a 503 means "maybe stored", and a
    /// client's Idempotency-Key makes its retry safe.
    pub transactions: bool,
    /// Prefix of the `transactional.id`s: each producing process uses
    /// `<prefix>-<role>-<host>-<port>`, stable across its restarts (so a
    /// restarted collector fences its old self at once) and unique per
    /// process (two processes with one id fence each other). Give every
    /// deployment sharing a cluster its own prefix.
    pub transactional_id_prefix: String,
    /// How long the brokers keep a transaction of a producer that went
    /// silent before aborting it (`transaction.timeout.ms`): until then
    /// `read_committed` readers wait at it. At least `delivery_timeout`.
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// librdkafka client properties passed through as they are, for
    /// security (`security.protocol`, `sasl.mechanisms`, `sasl.username`,
    /// `ssl.ca.location`, …) and tuning. They apply to every client logpipe
    /// creates and override logpipe's own settings.
    pub properties: std::collections::BTreeMap<String, String>,
    /// Client properties whose values are secrets, read from an
    /// environment variable or a file when logpipe connects, so that no
    /// password needs to be in the file:
    /// `"sasl.password" = { env = "KAFKA_PASSWORD" }` or
    /// `{ file = "/run/secrets/kafka-password" }`.
    pub secret_properties: std::collections::BTreeMap<String, crate::SecretRef>,
}

impl Default for KafkaBusConfig {
    fn default() -> Self {
        KafkaBusConfig {
            brokers: "127.0.0.1:9092".to_string(),
            replication_factor: 1,
            min_insync_replicas: None,
            group: "logpipe-stream".to_string(),
            delivery_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            transactions: false,
            transactional_id_prefix: "logpipe".to_string(),
            transaction_timeout: Duration::from_secs(15),
            properties: std::collections::BTreeMap::new(),
            secret_properties: std::collections::BTreeMap::new(),
        }
    }
}

/// When the embedded bus calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every append is fsynced before it is acknowledged; concurrent appends
    /// share one fsync (group commit). Survives power loss.
    Always,
    /// fsync at most every `fsync_interval`; appends are acknowledged once
    /// written to the OS (they survive a process crash, not a power loss)
    /// and reach consumers after the next fsync, so the lake is never ahead
    /// of what the disk holds. There is deliberately no "never": a consumer
    /// that ran ahead of the disk could lose or double records after a
    /// power loss.
    Interval,
}

/// How the collector writes a record's value on the embedded bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordEncoding {
    /// The validated fields, length-prefixed (`logpipe_core::record::binary`):
    /// the jobs reading the bus take them apart without parsing JSON again.
    Binary,
    /// Canonical JSON, as on Kafka: for a reader of the segment files
    /// outside logpipe.
    Json,
}

/// `[bus.embedded]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBusConfig {
    /// Where the embedded bus keeps its segments; unset: `DATA_DIR/bus`.
    pub dir: Option<PathBuf>,
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`: the longest time between fsyncs.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// A partition's active segment rolls over past this size.
    pub segment_bytes: u64,
    /// Appends waiting for the writer; beyond this the collector answers 503.
    pub max_pending_appends: usize,
    /// The form of a record's value (Kafka's topics are always JSON).
    pub record_encoding: RecordEncoding,
}

impl Default for EmbeddedBusConfig {
    fn default() -> Self {
        EmbeddedBusConfig {
            dir: None,
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_millis(100),
            segment_bytes: 64 * 1024 * 1024,
            // Each pending append is one request's records for one topic;
            // 256 of them (of up to 16 MiB) bound the queue's memory while
            // keeping both cores busy under load.
            max_pending_appends: 256,
            record_encoding: RecordEncoding::Binary,
        }
    }
}

impl BusConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.embedded.validate()?;
        if self.kind == BusKind::Kafka {
            self.kafka.validate()?;
        }
        Ok(())
    }
}

impl EmbeddedBusConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.segment_bytes < 1024 * 1024 {
            return invalid("bus.embedded.segment_bytes", "must be at least 1 MiB");
        }
        if self.max_pending_appends == 0 {
            return invalid("bus.embedded.max_pending_appends", "must be at least 1");
        }
        Ok(())
    }
}

impl KafkaBusConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return invalid(
                "bus.kafka.brokers",
                "is empty; set it to the bootstrap servers, e.g. 127.0.0.1:9092",
            );
        }
        if self.replication_factor == 0 {
            return invalid("bus.kafka.replication_factor", "must be at least 1");
        }
        if let Some(isr) = self.min_insync_replicas
            && !(1..=self.replication_factor).contains(&isr)
        {
            return invalid(
                "bus.kafka.min_insync_replicas",
                format!(
                    "is {isr}, must be 1 to bus.kafka.replication_factor ({}): a write could never be confirmed",
                    self.replication_factor
                ),
            );
        }
        if self.group.trim().is_empty() {
            return invalid("bus.kafka.group", "must not be empty");
        }
        if self.delivery_timeout < Duration::from_millis(100) {
            return invalid("bus.kafka.delivery_timeout", "must be at least 100ms");
        }
        if self.transaction_timeout < self.delivery_timeout {
            return invalid(
                "bus.kafka.transaction_timeout",
                format!(
                    "is {:?}, must be at least bus.kafka.delivery_timeout ({:?}): a transaction waits for its records",
                    self.transaction_timeout, self.delivery_timeout
                ),
            );
        }
        let prefix = &self.transactional_id_prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return invalid(
                "bus.kafka.transactional_id_prefix",
                format!("{prefix:?} must be letters, digits, '-', '_' or '.'"),
            );
        }
        for (key, secret) in &self.secret_properties {
            if let Err(reason) = secret.check() {
                return invalid("bus.kafka.secret_properties", format!("{key:?} {reason}"));
            }
            if self.properties.contains_key(key) {
                return invalid(
                    "bus.kafka.secret_properties",
                    format!("{key:?} is also in bus.kafka.properties: give it in one place"),
                );
            }
        }
        Ok(())
    }
}
