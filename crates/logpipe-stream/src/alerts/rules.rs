//! The rules and their thresholds.

use logpipe_config::{AlertsConfig, ErrorRateAlertConfig, LatencyAlertConfig, SilenceAlertConfig};
use serde::{Deserialize, Serialize};

/// The rules and their thresholds: the `[alerts]` config sections, whose
/// defaults are the rules' defaults.
#[derive(Debug, Clone, Default)]
pub struct AlertRules {
    pub error_rate: ErrorRateAlertConfig,
    pub latency: LatencyAlertConfig,
    pub silence: SilenceAlertConfig,
}

impl From<&AlertsConfig> for AlertRules {
    fn from(config: &AlertsConfig) -> Self {
        AlertRules {
            error_rate: config.error_rate.clone(),
            latency: config.latency.clone(),
            silence: config.silence.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Rule {
    HighErrorRate,
    LatencySpike,
    ServiceSilent,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::HighErrorRate => "HighErrorRate",
            Rule::LatencySpike => "LatencySpike",
            Rule::ServiceSilent => "ServiceSilent",
        }
    }

    pub fn from_name(name: &str) -> Option<Rule> {
        [Rule::HighErrorRate, Rule::LatencySpike, Rule::ServiceSilent]
            .into_iter()
            .find(|rule| rule.as_str() == name)
    }

    pub fn severity(self) -> &'static str {
        match self {
            Rule::HighErrorRate | Rule::ServiceSilent => "critical",
            Rule::LatencySpike => "warning",
        }
    }
}
