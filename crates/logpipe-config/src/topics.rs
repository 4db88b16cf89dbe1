//! `[topics.*]`: the bus topics logpipe creates (SPEC §1.4).

use std::time::Duration;

use logpipe_core::topics;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

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
    /// Kafka: this topic's replication factor (unset:
    /// `bus.kafka.replication_factor`).
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// Kafka: this topic's `min.insync.replicas` (unset:
    /// `bus.kafka.min_insync_replicas`).
    #[serde(default)]
    pub min_insync_replicas: Option<u32>,
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
                replication_factor: None,
                min_insync_replicas: None,
            },
            events: TopicConfig {
                partitions: 3,
                retention: week,
                retention_bytes: 0,
                replication_factor: None,
                min_insync_replicas: None,
            },
            alerts: TopicConfig {
                partitions: 1,
                retention: Duration::from_secs(24 * 3600),
                retention_bytes: 0,
                replication_factor: None,
                min_insync_replicas: None,
            },
        }
    }
}

impl TopicsConfig {
    /// (topic name, settings) for every topic created at start.
    pub fn all(&self) -> [(&'static str, &TopicConfig); 3] {
        [
            (topics::LOGS_RAW, &self.logs),
            (topics::EVENTS_ACTIVITY, &self.events),
            (topics::ALERTS_REALTIME, &self.alerts),
        ]
    }
}

impl TopicsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, topic) in [
            ("topics.logs.partitions", &self.logs),
            ("topics.events.partitions", &self.events),
            ("topics.alerts.partitions", &self.alerts),
        ] {
            if !(1..=1024).contains(&topic.partitions) {
                return invalid(key, format!("is {}, must be 1 to 1024", topic.partitions));
            }
        }
        for (replicas_key, isr_key, topic) in [
            (
                "topics.logs.replication_factor",
                "topics.logs.min_insync_replicas",
                &self.logs,
            ),
            (
                "topics.events.replication_factor",
                "topics.events.min_insync_replicas",
                &self.events,
            ),
            (
                "topics.alerts.replication_factor",
                "topics.alerts.min_insync_replicas",
                &self.alerts,
            ),
        ] {
            if topic.replication_factor == Some(0) {
                return invalid(replicas_key, "must be at least 1");
            }
            if let (Some(isr), Some(replicas)) =
                (topic.min_insync_replicas, topic.replication_factor)
                && !(1..=replicas).contains(&isr)
            {
                return invalid(
                    isr_key,
                    format!("is {isr}, must be 1 to the topic's replication factor ({replicas})"),
                );
            }
        }
        Ok(())
    }
}
