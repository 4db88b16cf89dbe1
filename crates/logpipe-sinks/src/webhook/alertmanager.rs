//! One alert in Alertmanager's v2 API format.

use logpipe_core::tables::AlertMessage;
use serde_json::{Value, json};

/// One alert in Alertmanager's v2 format.
pub fn alertmanager_alert(message: &AlertMessage, generator_url: &str) -> Value {
    let mut alert = json!({
        "labels": {
            "alertname": message.rule,
            "service": message.service,
            "severity": message.severity,
            "source": "logpipe",
        },
        "annotations": {
            "summary": message.summary,
            "value": message.value.to_string(),
            "threshold": message.threshold.to_string(),
            "alert_id": message.alert_id,
            "incident_id": message.incident_id,
            "window_start": message.window_start,
            "window_end": message.window_end,
        },
        "startsAt": message.incident_start,
        "generatorURL": generator_url,
    });
    if message.is_resolved() {
        alert["endsAt"] = json!(message.window_end);
    }
    alert
}
