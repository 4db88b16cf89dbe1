//! Alert notifications to a webhook in Alertmanager's v2 format
//! (`POST /api/v2/alerts`, a JSON array of alerts), so a real Alertmanager
//! takes them directly and any other receiver gets a documented shape.
//!
//! Alertmanager treats a firing alert it has not heard about for its
//! `resolve_timeout` as resolved, so firing alerts are re-sent every
//! `resend_every` until their RESOLVED arrives (Alertmanager deduplicates
//! by labels; a plain receiver sees the same `alert_id` again). A failed
//! POST is retried with backoff; delivery is at least once.

use std::collections::BTreeMap;
use std::time::Duration;

use logpipe_core::metrics::analytics;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::windows_job::AlertMessage;

#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub url: String,
    pub timeout: Duration,
    pub resend_every: Duration,
    /// Link put in each alert's `generatorURL` (the `/api/alerts` page).
    pub generator_url: String,
    /// Attempts per POST before it is dropped (logged and counted).
    pub attempts: u32,
}

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
    if message.state == "RESOLVED" {
        alert["endsAt"] = json!(message.window_end);
    }
    alert
}

/// Starts the delivery task; send alert batches into the returned channel.
pub fn spawn(
    options: WebhookOptions,
    mut stop: watch::Receiver<bool>,
) -> (mpsc::Sender<Vec<AlertMessage>>, JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::channel::<Vec<AlertMessage>>(256);
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .unwrap_or_default();
        let mut firing: BTreeMap<String, AlertMessage> = BTreeMap::new();
        let mut resend = tokio::time::interval(options.resend_every.max(Duration::from_secs(1)));
        resend.reset();
        loop {
            let batch = tokio::select! {
                batch = receiver.recv() => match batch {
                    Some(batch) => batch,
                    None => return,
                },
                _ = resend.tick() => firing.values().cloned().collect(),
                _ = stop.changed() => return,
            };
            if batch.is_empty() {
                continue;
            }
            for message in &batch {
                if message.state == "RESOLVED" {
                    firing.remove(&message.incident_id);
                } else {
                    firing.insert(message.incident_id.clone(), message.clone());
                }
            }
            let body = Value::Array(
                batch
                    .iter()
                    .map(|m| alertmanager_alert(m, &options.generator_url))
                    .collect(),
            );
            post_with_retries(&client, &options, &body, &mut stop).await;
        }
    });
    (sender, task)
}

async fn post_with_retries(
    client: &reqwest::Client,
    options: &WebhookOptions,
    body: &Value,
    stop: &mut watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=options.attempts.max(1) {
        let outcome = client.post(&options.url).json(body).send().await;
        match outcome {
            Ok(response) if response.status().is_success() => {
                analytics().webhook_sent += 1;
                return;
            }
            Ok(response) => {
                analytics().webhook_errors += 1;
                tracing::warn!(url = options.url, status = %response.status(), attempt, "alert webhook refused the alerts");
            }
            Err(error) => {
                analytics().webhook_errors += 1;
                tracing::warn!(url = options.url, %error, attempt, "alert webhook unreachable");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    tracing::error!(
        url = options.url,
        attempts = options.attempts,
        "giving up on an alert notification (the alerts are in the lake table `alerts` and on alerts.realtime)"
    );
}
