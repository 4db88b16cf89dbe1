//! `[generator]`: the built-in synthetic source of records (SPEC §1.2).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

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

impl GeneratorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return invalid(
                "generator.error_rate",
                format!("is {}, must be between 0 and 1", self.error_rate),
            );
        }
        if self.batch_size == 0 {
            return invalid("generator.batch_size", "must be at least 1");
        }
        if self.services.is_empty() {
            return invalid("generator.services", "must name at least one service");
        }
        for incident in &self.incidents {
            if !self.services.contains(&incident.service) {
                return invalid(
                    "generator.incidents.service",
                    format!(
                        "{:?} is not one of generator.services {:?}",
                        incident.service, self.services
                    ),
                );
            }
        }
        Ok(())
    }
}
