//! `[reports]`: the batch reports `logpipe up` schedules.

use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

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

impl ReportsConfig {
    /// Each report's name (`daily`, `weekly`, `service`) and parsed
    /// schedule; an empty expression leaves its report out.
    pub fn schedules(&self) -> Result<Vec<(&'static str, Cron)>, ConfigError> {
        [
            ("daily", "reports.daily_cron", &self.daily_cron),
            ("weekly", "reports.weekly_cron", &self.weekly_cron),
            ("service", "reports.service_cron", &self.service_cron),
        ]
        .into_iter()
        .filter(|(_, _, expression)| !expression.trim().is_empty())
        .map(|(name, key, expression)| {
            expression
                .parse::<Cron>()
                .map(|cron| (name, cron))
                .map_err(|e| ConfigError::Invalid {
                    key,
                    reason: format!("{expression:?} is not a cron expression: {e}"),
                })
        })
        .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.schedules().map(|_| ())
    }
}
