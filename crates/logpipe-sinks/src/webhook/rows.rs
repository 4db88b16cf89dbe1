//! A job's rows to a webhook (`-- webhook: URL` in a job's header): each
//! step of a streaming job, each run of a batch job, as one JSON POST
//!
//! ```json
//! {"job": "activity_per_minute", "table": "activity_per_minute",
//!  "step": 42, "period": null, "rows": [{"window_start": "…", "events": 17}]}
//! ```
//!
//! with an `Idempotency-Key` header of `JOB:step:N` (a streaming step) or
//! `JOB:period:P` (a batch period): a receiver that keeps the keys it has
//! seen takes each step once. Delivery is at least once and in order: the
//! sink is blocking, so a streaming job whose receiver is down waits (its
//! records wait on the bus) and a batch run fails after its attempts and
//! is recorded so.

use std::time::Duration;

use arrow::array::RecordBatch;
use logpipe_core::retry::Backoff;
use serde_json::{Value, json};

use crate::metrics::sink_metrics;
use crate::{Delivery, RowWrite, SinkError, StepOutput, StepSink};

/// Attempts per POST inside one delivery (a streaming job's delivery is
/// then retried by `deliver_all` until it goes through).
const ATTEMPTS: u32 = 3;

/// Makes [`RowsWebhook`]s sharing one HTTP client.
#[derive(Clone, Default)]
pub struct WebhookClient {
    client: reqwest::Client,
}

impl WebhookClient {
    /// A client trusting `roots` besides the public roots (`tls.ca_file`).
    pub fn new(roots: &[reqwest::Certificate], timeout: Duration) -> WebhookClient {
        WebhookClient {
            client: super::http_client(roots, timeout),
        }
    }

    pub fn to(&self, url: &str) -> RowsWebhook {
        RowsWebhook {
            client: self.client.clone(),
            url: url.to_string(),
        }
    }
}

/// Posts a job's rows to one URL.
pub struct RowsWebhook {
    client: reqwest::Client,
    url: String,
}

/// Rows as JSON objects (times as RFC 3339 text).
fn rows_json(batch: &RecordBatch) -> Result<Value, SinkError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer
        .write(batch)
        .map_err(|e| SinkError::Webhook(format!("cannot encode the rows as JSON: {e}")))?;
    writer
        .finish()
        .map_err(|e| SinkError::Webhook(format!("cannot encode the rows as JSON: {e}")))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| SinkError::Webhook(format!("cannot encode the rows as JSON: {e}")))
}

impl RowsWebhook {
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn post(&self, key: &str, body: &Value) -> Result<(), SinkError> {
        let metrics = sink_metrics();
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(&self.url)
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    metrics.rows_webhook_sent.inc();
                    return Ok(());
                }
                Ok(response) => last = format!("it answered {}", response.status()),
                Err(error) => last = format!("it cannot be reached: {error}"),
            }
            metrics.rows_webhook_errors.inc();
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Err(SinkError::Webhook(format!(
            "the job's webhook {} did not take {key} after {ATTEMPTS} attempts: {last}",
            self.url
        )))
    }
}

#[async_trait::async_trait]
impl StepSink for RowsWebhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn delivery(&self) -> Delivery {
        Delivery::Blocking
    }

    async fn deliver(&self, output: &StepOutput<'_>) -> Result<(), SinkError> {
        for table in &output.tables {
            let (key, step, period) = match &table.write {
                RowWrite::ReplacePeriod { value, .. } => (
                    format!("{}:period:{value}", output.job),
                    Value::Null,
                    Value::String(value.clone()),
                ),
                _ if table.batch.num_rows() == 0 => continue,
                _ => (
                    format!("{}:step:{}", output.job, output.step),
                    json!(output.step),
                    Value::Null,
                ),
            };
            let body = json!({
                "job": output.job,
                "table": table.name,
                "step": step,
                "period": period,
                "rows": rows_json(table.batch)?,
            });
            self.post(&key, &body).await?;
        }
        Ok(())
    }
}
