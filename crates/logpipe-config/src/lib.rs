//! logpipe configuration as data.
//!
//! Layers, later wins: built-in defaults (the `Default` impls below, which are
//! what `logpipe up` runs with no file at all) → `logpipe.toml` (or the file
//! given with `--config`) → environment variables `LOGPIPE__SECTION__KEY`
//! (e.g. `LOGPIPE__BUS__EMBEDDED__FSYNC=interval`) → command-line flags.
//! Every struct denies unknown keys, so a typo fails at start with a message
//! naming the key and where it came from. [`Config::validate`] then checks
//! values that types alone cannot.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The default file looked for in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "logpipe.toml";
/// Environment variable prefix; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "LOGPIPE__";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: `{key}` {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the bus, the lake and the job checkpoints live.
    pub data_dir: PathBuf,
    /// Address of the HTTP server: collector, query API, `/health`, `/metrics`.
    pub listen: String,
    pub collector: CollectorConfig,
    pub bus: BusConfig,
    pub topics: TopicsConfig,
    pub lake: LakeConfig,
    pub windows: WindowsConfig,
    pub alerts: AlertsConfig,
    pub postgres: PostgresConfig,
    pub reports: ReportsConfig,
    pub generator: GeneratorConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listen: "127.0.0.1:8081".to_string(),
            collector: CollectorConfig::default(),
            bus: BusConfig::default(),
            topics: TopicsConfig::default(),
            lake: LakeConfig::default(),
            windows: WindowsConfig::default(),
            alerts: AlertsConfig::default(),
            postgres: PostgresConfig::default(),
            reports: ReportsConfig::default(),
            generator: GeneratorConfig::default(),
        }
    }
}

/// `[collector]`: the HTTP ingest endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Largest request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Longest string field in a record; longer rejects that record.
    pub max_field_bytes: usize,
    /// How far in the future a record's timestamp may lie.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// `Retry-After` sent with 503 when the bus cannot take more.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            // 16 MiB: ~50,000 seed-size records, far above a sane batch,
            // small enough that a hostile client cannot balloon memory.
            max_body_bytes: 16 * 1024 * 1024,
            max_field_bytes: 64 * 1024,
            max_future_skew: Duration::from_secs(24 * 3600),
            retry_after: Duration::from_secs(1),
        }
    }
}

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

/// `[bus.kafka]`: a Kafka-protocol broker cluster (Apache Kafka, Redpanda,
/// tansu, a managed service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaBusConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Replication factor of the topics logpipe creates. It cannot exceed
    /// the number of brokers.
    pub replication_factor: u32,
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
    /// librdkafka client properties passed through as they are, for
    /// security (`security.protocol`, `sasl.mechanisms`, `sasl.username`,
    /// `ssl.ca.location`, …) and tuning. They apply to every client logpipe
    /// creates and override logpipe's own settings.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaBusConfig {
    fn default() -> Self {
        KafkaBusConfig {
            brokers: "127.0.0.1:9092".to_string(),
            replication_factor: 1,
            group: "logpipe-stream".to_string(),
            delivery_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            properties: std::collections::BTreeMap::new(),
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

/// `[bus.embedded]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBusConfig {
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`: the longest time between fsyncs.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// A partition's active segment rolls over past this size.
    pub segment_bytes: u64,
    /// Appends waiting for the writer; beyond this the collector answers 503.
    pub max_pending_appends: usize,
}

impl Default for EmbeddedBusConfig {
    fn default() -> Self {
        EmbeddedBusConfig {
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_millis(100),
            segment_bytes: 64 * 1024 * 1024,
            // Each pending append is one request's records for one topic;
            // 256 of them (of up to 16 MiB) bound the queue's memory while
            // keeping both cores busy under load.
            max_pending_appends: 256,
        }
    }
}

/// One topic's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub partitions: u32,
    /// Segments older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Per partition: oldest segments are deleted past this size (0 = no limit).
    #[serde(default)]
    pub retention_bytes: u64,
}

/// `[topics.*]` (SPEC §1.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// `logs.raw`
    pub logs: TopicConfig,
    /// `events.activity`
    pub events: TopicConfig,
    /// `alerts.realtime`
    pub alerts: TopicConfig,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        let week = Duration::from_secs(7 * 24 * 3600);
        TopicsConfig {
            logs: TopicConfig {
                partitions: 3,
                retention: week,
                retention_bytes: 0,
            },
            events: TopicConfig {
                partitions: 3,
                retention: week,
                retention_bytes: 0,
            },
            alerts: TopicConfig {
                partitions: 1,
                retention: Duration::from_secs(24 * 3600),
                retention_bytes: 0,
            },
        }
    }
}

impl TopicsConfig {
    /// (topic name, settings) for every topic created at start.
    pub fn all(&self) -> [(&'static str, &TopicConfig); 3] {
        [
            ("logs.raw", &self.logs),
            ("events.activity", &self.events),
            ("alerts.realtime", &self.alerts),
        ]
    }
}

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Snappy,
}

/// What the lake job does when offsets it needs are gone (retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataLossPolicy {
    /// Stop with an error that says which offsets are gone (the seed's
    /// `failOnDataLoss=true`).
    Fail,
    /// Skip to the oldest available offset and count the loss in a metric.
    SkipAhead,
}

/// `[lake]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    pub compression: Compression,
    /// How often buffered records are written and committed; the bound on
    /// how long an acknowledged record takes to become queryable.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Flush early once this many records are buffered (bounds memory).
    pub max_buffered_rows: usize,
    pub on_data_loss: DataLossPolicy,
    /// Offsets per partition within which a second copy of a record (same
    /// id: a client retried a request sent with an `Idempotency-Key`) is
    /// dropped. 0 turns the check off; at most 2^30. A job that starts
    /// re-reads this many offsets before its start to rebuild the check.
    pub dedup_window: u64,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            compression: Compression::Zstd,
            flush_interval: Duration::from_secs(1),
            // ~ 60 MB of column data at seed record sizes; at full load a
            // one-second flush holds about this many rows anyway.
            max_buffered_rows: 200_000,
            on_data_loss: DataLossPolicy::Fail,
            // 25 s of a partition at 60,000 records/s over three
            // partitions; about 4 MB per partition and job when every
            // record has an id (8 bytes a record, plus vector growth).
            dedup_window: 500_000,
        }
    }
}

/// `[windows]`: the window aggregator (SPEC §1.5).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Run the window job inside `logpipe up`.
    pub enabled: bool,
    /// Tumbling window length.
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// How long after a window's end its records are still counted; later
    /// records reach the lake but not the window (`logpipe_window_late_records_total`).
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// With no new log record for this long, event time follows the clock
    /// so the last windows close and silent services are noticed.
    #[serde(with = "humantime_serde")]
    pub idle_close: Duration,
    /// Whether the collector gives each log record its window fields as a
    /// record header, so the window job need not parse the JSON again.
    /// Unset: on with the embedded bus, off with Kafka, where librdkafka
    /// allocates for every header on both sides and that cost more than
    /// the parse it saves (docs/BENCHMARKS.md).
    pub summary_header: Option<bool>,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            enabled: true,
            size: Duration::from_secs(5),
            allowed_lateness: Duration::from_secs(10),
            idle_close: Duration::from_secs(30),
            summary_header: None,
        }
    }
}

/// `[alerts.error_rate]`: the seed's HighErrorRate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorRateAlertConfig {
    /// Fire when the ERROR share of a window is above this…
    pub threshold: f64,
    /// …for this many consecutive windows (and resolve after as many normal ones).
    pub windows: u32,
    /// Windows with fewer ERROR records than this are not judged.
    pub min_errors: u64,
}

impl Default for ErrorRateAlertConfig {
    fn default() -> Self {
        ErrorRateAlertConfig {
            threshold: 0.05,
            windows: 2,
            min_errors: 5,
        }
    }
}

/// `[alerts.latency]`: p95 latency against its own moving baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyAlertConfig {
    /// Fire when a window's p95 is above `factor` × the EWMA of earlier p95s…
    pub factor: f64,
    /// …for this many consecutive windows.
    pub windows: u32,
    /// Normal windows learnt before the rule judges (also the EWMA span).
    pub baseline_windows: u32,
    /// Windows with fewer latency samples are not judged.
    pub min_records: u64,
}

impl Default for LatencyAlertConfig {
    fn default() -> Self {
        LatencyAlertConfig {
            factor: 3.0,
            windows: 2,
            baseline_windows: 12,
            min_records: 10,
        }
    }
}

/// `[alerts.silence]`: a service that stops sending.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceAlertConfig {
    /// Fire after this many closed windows without a record of a service seen before.
    pub windows: u32,
}

impl Default for SilenceAlertConfig {
    fn default() -> Self {
        SilenceAlertConfig { windows: 6 }
    }
}

/// `[alerts]`: the anomaly detector and where alerts go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Run the anomaly detector on closed windows.
    pub enabled: bool,
    /// POST alerts here in Alertmanager's v2 format (e.g.
    /// http://127.0.0.1:9093/api/v2/alerts); empty = no webhook.
    pub webhook_url: String,
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Re-send firing alerts this often (Alertmanager resolves alerts it
    /// stops hearing about).
    #[serde(with = "humantime_serde")]
    pub webhook_resend: Duration,
    pub error_rate: ErrorRateAlertConfig,
    pub latency: LatencyAlertConfig,
    pub silence: SilenceAlertConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            webhook_url: String::new(),
            webhook_timeout: Duration::from_secs(5),
            webhook_resend: Duration::from_secs(60),
            error_rate: ErrorRateAlertConfig::default(),
            latency: LatencyAlertConfig::default(),
            silence: SilenceAlertConfig::default(),
        }
    }
}

/// `[postgres]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// e.g. postgres://logpipe@127.0.0.1:5432/logpipe (a password is better
    /// given as LOGPIPE__POSTGRES__URL than in a file). Empty: windows and
    /// reports stay in the lake only.
    pub url: String,
}

/// `[reports]`: the batch reports `logpipe up` schedules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Run the schedules below inside `logpipe up`.
    pub schedule: bool,
    /// Cron expressions in UTC (minute hour day-of-month month day-of-week);
    /// empty disables one. Daily runs for the previous day, weekly for the
    /// previous ISO week, service analysis for the 7 days before today.
    pub daily_cron: String,
    pub weekly_cron: String,
    pub service_cron: String,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            schedule: true,
            daily_cron: "10 0 * * *".to_string(),
            weekly_cron: "20 0 * * 1".to_string(),
            service_cron: "30 0 * * *".to_string(),
        }
    }
}

/// What an injected incident does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Half of the service's logs become ERROR with status 500/503.
    ErrorBurst,
    /// The service's response times grow tenfold.
    LatencySpike,
    /// The service sends nothing.
    Silence,
}

/// `[[generator.incidents]]`: an anomaly injected on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentConfig {
    pub kind: IncidentKind,
    pub service: String,
    /// When it starts, counted from the generator's start.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// `[generator]` (SPEC §1.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Run the built-in generator inside `logpipe up`.
    pub enabled: bool,
    /// Collector base URL; empty means this process's own `listen` address.
    pub target: String,
    #[serde(with = "humantime_serde")]
    pub log_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub event_interval: Duration,
    /// Records per batch.
    pub batch_size: usize,
    /// Share of log records at ERROR level.
    pub error_rate: f64,
    pub services: Vec<String>,
    /// Anomalies to inject (none by default).
    pub incidents: Vec<IncidentConfig>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            enabled: true,
            target: String::new(),
            log_interval: Duration::from_secs(5),
            event_interval: Duration::from_secs(10),
            batch_size: 100,
            error_rate: 0.05,
            services: logpipe_core::record::DEFAULT_SERVICES
                .map(String::from)
                .to_vec(),
            incidents: Vec::new(),
        }
    }
}

impl Config {
    /// Loads defaults → file → environment (`LOGPIPE__…`). `file` given
    /// explicitly must exist; otherwise `logpipe.toml` is read when present.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // Defaults as a layer (not only `serde(default)`), so that a file
        // setting one key of `[topics.logs]` keeps the others' defaults.
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::MissingFile {
                        path: path.to_path_buf(),
                    });
                }
                figment = figment.merge(Toml::file(path));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_FILE).exists() {
                    figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE));
                }
            }
        }
        // `LOGPIPE__BUS__EMBEDDED__FSYNC=interval` → `bus.embedded.fsync`.
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        let config: Config = figment
            .extract()
            .map_err(|error| ConfigError::Parse(describe_figment_error(error)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "listen",
                format!("{:?} is not HOST:PORT (e.g. 127.0.0.1:8081)", self.listen),
            );
        }
        for (key, topic) in [
            ("topics.logs.partitions", &self.topics.logs),
            ("topics.events.partitions", &self.topics.events),
            ("topics.alerts.partitions", &self.topics.alerts),
        ] {
            if !(1..=1024).contains(&topic.partitions) {
                return invalid(key, format!("is {}, must be 1 to 1024", topic.partitions));
            }
        }
        if self.lake.dedup_window > logpipe_core::dedup::MAX_WINDOW {
            return invalid(
                "lake.dedup_window",
                format!(
                    "is {}, must be at most {} offsets",
                    self.lake.dedup_window,
                    logpipe_core::dedup::MAX_WINDOW
                ),
            );
        }
        if self.collector.max_body_bytes < 1024 {
            return invalid("collector.max_body_bytes", "must be at least 1024".into());
        }
        if self.collector.max_field_bytes == 0 {
            return invalid("collector.max_field_bytes", "must be at least 1".into());
        }
        if self.bus.embedded.segment_bytes < 1024 * 1024 {
            return invalid(
                "bus.embedded.segment_bytes",
                "must be at least 1 MiB".into(),
            );
        }
        if self.bus.embedded.max_pending_appends == 0 {
            return invalid(
                "bus.embedded.max_pending_appends",
                "must be at least 1".into(),
            );
        }
        if self.bus.kind == BusKind::Kafka {
            let kafka = &self.bus.kafka;
            if kafka.brokers.trim().is_empty() {
                return invalid(
                    "bus.kafka.brokers",
                    "is empty; set it to the bootstrap servers, e.g. 127.0.0.1:9092".into(),
                );
            }
            if kafka.replication_factor == 0 {
                return invalid("bus.kafka.replication_factor", "must be at least 1".into());
            }
            if kafka.group.trim().is_empty() {
                return invalid("bus.kafka.group", "must not be empty".into());
            }
            if kafka.delivery_timeout < Duration::from_millis(100) {
                return invalid(
                    "bus.kafka.delivery_timeout",
                    "must be at least 100ms".into(),
                );
            }
        }
        if self.lake.flush_interval.is_zero() {
            return invalid("lake.flush_interval", "must be more than 0".into());
        }
        if self.lake.max_buffered_rows == 0 {
            return invalid("lake.max_buffered_rows", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.generator.error_rate) {
            return invalid(
                "generator.error_rate",
                format!("is {}, must be between 0 and 1", self.generator.error_rate),
            );
        }
        if self.generator.batch_size == 0 {
            return invalid("generator.batch_size", "must be at least 1".into());
        }
        if self.windows.size < Duration::from_millis(100) {
            return invalid("windows.size", "must be at least 100ms".into());
        }
        if self.windows.idle_close.is_zero() {
            return invalid("windows.idle_close", "must be more than 0".into());
        }
        let threshold = self.alerts.error_rate.threshold;
        if !(threshold > 0.0 && threshold < 1.0) {
            return invalid(
                "alerts.error_rate.threshold",
                format!("is {threshold}, must be between 0 and 1 (exclusive)"),
            );
        }
        if self.alerts.latency.factor <= 1.0 {
            return invalid(
                "alerts.latency.factor",
                format!("is {}, must be more than 1", self.alerts.latency.factor),
            );
        }
        for (key, windows) in [
            ("alerts.error_rate.windows", self.alerts.error_rate.windows),
            ("alerts.latency.windows", self.alerts.latency.windows),
            (
                "alerts.latency.baseline_windows",
                self.alerts.latency.baseline_windows,
            ),
            ("alerts.silence.windows", self.alerts.silence.windows),
        ] {
            if windows == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        let url = &self.alerts.webhook_url;
        if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
            return invalid(
                "alerts.webhook_url",
                format!("{url:?} is not an http:// or https:// URL"),
            );
        }
        let url = &self.postgres.url;
        if !url.is_empty() && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return invalid(
                "postgres.url",
                "must start with postgres:// or postgresql://".into(),
            );
        }
        for incident in &self.generator.incidents {
            if !self.generator.services.contains(&incident.service) {
                return invalid(
                    "generator.incidents.service",
                    format!(
                        "{:?} is not one of generator.services {:?}",
                        incident.service, self.generator.services
                    ),
                );
            }
        }
        if self.generator.services.is_empty() {
            return invalid(
                "generator.services",
                "must name at least one service".into(),
            );
        }
        Ok(())
    }
}

/// figment's message names the key path and the source; keep it, and make
/// "unknown field" point at the section.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(source) => format!(" (from {source})"),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            if path.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("`{path}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// figment's Jail closures return figment::Error by its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_need_no_file_and_match_the_seed() {
        Jail::expect_with(|_jail| {
            let config = Config::load(None).unwrap();
            assert_eq!(config.topics.logs.partitions, 3);
            assert_eq!(config.topics.alerts.partitions, 1);
            assert_eq!(config.generator.batch_size, 100);
            assert_eq!(config.generator.log_interval, Duration::from_secs(5));
            assert_eq!(config.listen, "127.0.0.1:8081");
            Ok(())
        });
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let example = include_str!("../../../logpipe.example.toml");
        Jail::expect_with(|jail| {
            jail.create_file("example.toml", example)?;
            let from_file = Config::load(Some(Path::new("example.toml"))).unwrap();
            let defaults = Config::default();
            assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
            Ok(())
        });
    }

    #[test]
    fn file_then_env_override_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "logpipe.toml",
                "data_dir = \"/tmp/x\"\n[bus.embedded]\nfsync = \"interval\"\n[lake]\nflush_interval = \"250ms\"\n",
            )?;
            jail.set_env("LOGPIPE__BUS__EMBEDDED__FSYNC", "always");
            jail.set_env("LOGPIPE__TOPICS__LOGS__PARTITIONS", "6");
            jail.set_env("OTHER", "ignored");
            let config = Config::load(None).unwrap();
            assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(config.bus.embedded.fsync, FsyncPolicy::Always);
            assert_eq!(config.lake.flush_interval, Duration::from_millis(250));
            assert_eq!(config.topics.logs.partitions, 6);
            Ok(())
        });
    }

    fn load_error(setup: impl FnOnce(&mut Jail)) -> String {
        let mut message = String::new();
        Jail::expect_with(|jail| {
            setup(jail);
            message = Config::load(Some(Path::new("given.toml")))
                .unwrap_err()
                .to_string();
            Ok(())
        });
        message
    }

    #[test]
    fn unknown_or_invalid_keys_fail_naming_the_key() {
        let error = load_error(|jail| {
            jail.create_file("given.toml", "[lake]\nflush_intervall = \"1s\"\n")
                .unwrap();
        });
        assert!(
            error.contains("flush_intervall") && error.contains("given.toml"),
            "{error}"
        );

        let error = load_error(|jail| {
            jail.create_file("given.toml", "").unwrap();
            jail.set_env("LOGPIPE__BUS__FSYNK", "never");
        });
        assert!(error.contains("fsynk"), "{error}");

        let error = load_error(|jail| {
            jail.create_file("given.toml", "[bus.embedded]\nfsync = \"sometimes\"\n")
                .unwrap();
        });
        assert!(
            error.contains("sometimes") && error.contains("fsync"),
            "{error}"
        );

        let error = load_error(|jail| {
            jail.create_file("given.toml", "").unwrap();
            jail.set_env("LOGPIPE__TOPICS__LOGS__PARTITIONS", "0");
        });
        assert!(error.contains("topics.logs.partitions"), "{error}");

        let error = load_error(|jail| {
            jail.create_file("given.toml", "").unwrap();
            jail.set_env("LOGPIPE__LAKE__DEDUP_WINDOW", "5000000000");
        });
        assert!(error.contains("lake.dedup_window"), "{error}");

        let error = load_error(|jail| {
            jail.create_file("given.toml", "listen = \"nowhere\"")
                .unwrap();
        });
        assert!(error.contains("`listen`"), "{error}");

        let error = load_error(|_| {});
        assert!(error.contains("does not exist"), "{error}");
    }
}
