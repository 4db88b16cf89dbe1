//! `[alerts]`: the anomaly detector's rules and the alert webhook.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, invalid};

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

impl AlertsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let threshold = self.error_rate.threshold;
        if !(threshold > 0.0 && threshold < 1.0) {
            return invalid(
                "alerts.error_rate.threshold",
                format!("is {threshold}, must be between 0 and 1 (exclusive)"),
            );
        }
        if self.latency.factor <= 1.0 {
            return invalid(
                "alerts.latency.factor",
                format!("is {}, must be more than 1", self.latency.factor),
            );
        }
        for (key, windows) in [
            ("alerts.error_rate.windows", self.error_rate.windows),
            ("alerts.latency.windows", self.latency.windows),
            (
                "alerts.latency.baseline_windows",
                self.latency.baseline_windows,
            ),
            ("alerts.silence.windows", self.silence.windows),
        ] {
            if windows == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        let url = &self.webhook_url;
        if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
            return invalid(
                "alerts.webhook_url",
                format!("{url:?} is not an http:// or https:// URL"),
            );
        }
        Ok(())
    }
}
