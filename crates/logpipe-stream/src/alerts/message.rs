//! An alert as [`AlertMessage`]: what `alerts.realtime`, the webhook and
//! `/api/alerts` carry.

use logpipe_core::tables::AlertMessage;
use logpipe_core::time::micros_to_rfc3339;

use super::{Alert, Rule};

impl Alert {
    /// `warning` or `critical`.
    pub fn severity(&self) -> &str {
        match self.severity.as_str() {
            "" => Rule::from_name(&self.rule).map_or("warning", Rule::severity),
            severity => severity,
        }
    }

    /// The message of this alert, detected at `detected_at_micros`.
    pub fn message(&self, detected_at_micros: i64) -> AlertMessage {
        AlertMessage {
            alert_id: self.alert_id.clone(),
            incident_id: self.incident_id.clone(),
            state: self.state.as_str().to_string(),
            rule: self.rule.clone(),
            severity: self.severity().to_string(),
            service: self.service.clone(),
            value: self.value,
            threshold: self.threshold,
            window_start: micros_to_rfc3339(self.window_start_micros),
            window_end: micros_to_rfc3339(self.window_end_micros),
            incident_start: micros_to_rfc3339(self.incident_start_micros),
            detected_at: micros_to_rfc3339(detected_at_micros),
            summary: self.summary.clone(),
        }
    }
}

/// The messages of a step's alerts, each logged as a warning: what the
/// sinks and `/api/alerts` carry.
pub fn announce(job: &str, alerts: &[Alert], detected_at_micros: i64) -> Vec<AlertMessage> {
    alerts
        .iter()
        .map(|alert| {
            let message = alert.message(detected_at_micros);
            tracing::warn!(
                job,
                alert = message.alert_id,
                state = message.state,
                "{}",
                message.summary
            );
            message
        })
        .collect()
}
