//! Alert notifications to a webhook in Alertmanager's v2 format
//! (`POST /api/v2/alerts`, a JSON array of alerts, [`alertmanager`]), so a
//! real Alertmanager takes them directly and any other receiver gets a
//! documented shape.
//!
//! Alertmanager treats a firing alert it has not heard about for its
//! `resolve_timeout` as resolved, so firing alerts are re-sent every
//! `resend_every` until their RESOLVED arrives (Alertmanager deduplicates
//! by labels; a plain receiver sees the same `alert_id` again). A failed
//! POST is retried with backoff; delivery is at least once. The posting
//! runs in a task of its own, so a slow receiver never holds the job: the
//! sink hands each step's alerts over through a bounded queue.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use logpipe_core::retry::Backoff;
use logpipe_core::tables::AlertMessage;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics::sink_metrics;
use crate::{Delivery, SinkError, StepOutput, StepSink};

pub mod alertmanager;
pub mod rows;

pub use alertmanager::alertmanager_alert;

/// Steps of alerts waiting for the poster: a step has at most a few alerts
/// per service, and 256 steps are minutes of incidents; past that the job
/// waits, which shows the receiver is down in the job's logs.
const QUEUED_STEPS: usize = 256;
/// The first wait before a failed POST is sent again, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub url: String,
    pub timeout: Duration,
    pub resend_every: Duration,
    /// Link put in each alert's `generatorURL` (the `/api/alerts` page).
    pub generator_url: String,
    /// Attempts per POST before it is dropped (logged and counted).
    pub attempts: u32,
    /// CA certificates trusted besides the public roots (`tls.ca_file`).
    pub roots: Vec<reqwest::Certificate>,
}

/// The webhook as a sink; its poster task runs until [`WebhookSink::finish`].
pub struct WebhookSink {
    sender: mpsc::Sender<Vec<AlertMessage>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WebhookSink {
    /// Starts the poster task.
    pub fn spawn(options: WebhookOptions) -> WebhookSink {
        let (sender, receiver) = mpsc::channel::<Vec<AlertMessage>>(QUEUED_STEPS);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(post_alerts(options, receiver, stopped));
        WebhookSink {
            sender,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops retrying and waits for the poster (after the jobs are done,
    /// so their last alerts get their attempts).
    pub async fn finish(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

#[async_trait::async_trait]
impl StepSink for WebhookSink {
    fn name(&self) -> &'static str {
        "alert webhook"
    }

    fn delivery(&self) -> Delivery {
        Delivery::BestEffort
    }

    async fn deliver(&self, output: &StepOutput<'_>) -> Result<(), SinkError> {
        if output.alerts.is_empty() {
            return Ok(());
        }
        self.sender
            .send(output.alerts.to_vec())
            .await
            .map_err(|_| SinkError::Stopped("alert webhook"))
    }
}

/// A client for webhooks: `timeout` per request, trusting `roots` besides
/// the public roots (`tls.ca_file`).
pub(crate) fn http_client(roots: &[reqwest::Certificate], timeout: Duration) -> reqwest::Client {
    roots
        .iter()
        .fold(reqwest::Client::builder(), |builder, root| {
            builder.add_root_certificate(root.clone())
        })
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// The poster: sends each step's alerts, and re-sends the firing ones.
async fn post_alerts(
    options: WebhookOptions,
    mut receiver: mpsc::Receiver<Vec<AlertMessage>>,
    mut stop: watch::Receiver<bool>,
) {
    let client = http_client(&options.roots, options.timeout);
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
            if message.is_resolved() {
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
}

async fn post_with_retries(
    client: &reqwest::Client,
    options: &WebhookOptions,
    body: &Value,
    stop: &mut watch::Receiver<bool>,
) {
    let metrics = sink_metrics();
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    for attempt in 1..=options.attempts.max(1) {
        let outcome = client.post(&options.url).json(body).send().await;
        match outcome {
            Ok(response) if response.status().is_success() => {
                metrics.webhook_sent.inc();
                return;
            }
            Ok(response) => {
                metrics.webhook_errors.inc();
                tracing::warn!(url = options.url, status = %response.status(), attempt, "alert webhook refused the alerts");
            }
            Err(error) => {
                metrics.webhook_errors.inc();
                tracing::warn!(url = options.url, %error, attempt, "alert webhook unreachable");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return,
        }
    }
    tracing::error!(
        url = options.url,
        attempts = options.attempts,
        "giving up on an alert notification (the alerts are in the lake table `alerts` and on alerts.realtime)"
    );
}
