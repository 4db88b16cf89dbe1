//! The scoring hook (seed 003's model service): each upserted row of a
//! table is POSTed as JSON to a URL, and the number it answers is written
//! in a column of the same row, in the same transaction.
//!
//! Rows are scored concurrently (at most `concurrency` requests at once:
//! the bounded queue), each with a timeout and retries. When the scorer
//! keeps failing, `on_failure` decides: `wait` holds the batch and tries
//! again (no row without its score, the sink stalls while the scorer is
//! down), `null` writes the row without a score (the change is never held
//! up). Either way no change is lost: the bus positions only move with the
//! rows. A replayed batch is scored again.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use logpipe_config::{CdcScoreConfig, ScoreOnFailure};
use serde_json::{Map, Value};

use crate::metrics::cdc_metrics;

/// A configured scorer; its clones (one per request in flight) share it.
#[derive(Clone)]
pub struct Scorer(Arc<Inner>);

struct Inner {
    config: CdcScoreConfig,
    client: reqwest::Client,
}

/// Why a row got no score.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("the scorer {url} failed {attempts} time(s), last: {last}")]
    Failed {
        url: String,
        attempts: u32,
        last: String,
    },
}

impl Scorer {
    pub fn new(config: CdcScoreConfig) -> Scorer {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .unwrap_or_default();
        Scorer(Arc::new(Inner { config, client }))
    }

    /// The column the score goes to.
    pub fn column(&self) -> &str {
        &self.0.config.column
    }

    /// Adds the score to every row (`null` where the scorer failed and
    /// `on_failure = "null"`); `Err` when it failed and the batch must wait.
    pub async fn score(
        &self,
        sink: &str,
        rows: &mut [Map<String, Value>],
    ) -> Result<(), ScoreError> {
        let config = &self.0.config;
        // At most `concurrency` requests in flight (the hook's bounded
        // queue), answers in row order; each future owns its row's JSON,
        // serialized once for all its attempts. (The futures are made
        // first: a stream mapping borrowed rows is not `Send` for every
        // lifetime, which the sink task needs.)
        let requests: Vec<_> = rows
            .iter()
            .map(|row| {
                let scorer = self.clone();
                let body =
                    bytes::Bytes::from(serde_json::to_vec(row).expect("a JSON object serializes"));
                async move { scorer.one(body).await }
            })
            .collect();
        let answers: Vec<Result<Value, ScoreError>> = futures::stream::iter(requests)
            .buffered(config.concurrency.max(1))
            .collect()
            .await;
        let metrics = cdc_metrics();
        for (row, answer) in rows.iter_mut().zip(answers) {
            match answer {
                Ok(score) => {
                    metrics.scores.inc(&[sink, "ok"]);
                    row.insert(config.column.clone(), score);
                }
                Err(error) if config.on_failure == ScoreOnFailure::Null => {
                    metrics.scores.inc(&[sink, "failed"]);
                    tracing::warn!(sink, %error, "CDC scorer failed: the row is written without its score");
                    row.insert(config.column.clone(), Value::Null);
                }
                Err(error) => {
                    metrics.scores.inc(&[sink, "failed"]);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// One row's score: the answer's number, or its `column` field's.
    async fn one(&self, body: bytes::Bytes) -> Result<Value, ScoreError> {
        let Inner { config, client } = &*self.0;
        let mut last = String::new();
        let attempts = config.retries + 1;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt.min(6))).await;
            }
            let request = client
                .post(&config.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    last = error.to_string();
                    continue;
                }
            };
            if !response.status().is_success() {
                last = format!("HTTP {}", response.status());
                continue;
            }
            match response.json::<Value>().await {
                Ok(Value::Number(n)) => return Ok(Value::Number(n)),
                Ok(Value::Object(answer)) => match answer.get(&config.column) {
                    Some(Value::Number(n)) => return Ok(Value::Number(n.clone())),
                    _ => last = format!("the answer has no number in \"{}\"", config.column),
                },
                Ok(other) => last = format!("the answer {other} is not a number"),
                Err(error) => last = format!("the answer is not JSON: {error}"),
            }
        }
        Err(ScoreError::Failed {
            url: config.url.clone(),
            attempts,
            last,
        })
    }
}
