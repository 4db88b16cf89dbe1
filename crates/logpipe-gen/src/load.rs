//! Sending batches with retries, and the load client (`logpipe generate`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use logpipe_core::RecordKind;
use logpipe_core::retry::Backoff;
use tokio::sync::watch;

use crate::metrics::generator_metrics;
use crate::synthetic::{SyntheticOptions, SyntheticSource};

/// How a failed send is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up on a batch after retrying this long (`None`: never).
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            give_up_after: Some(Duration::from_secs(120)),
        }
    }
}

/// What became of one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// The collector answered 200 or 422: `accepted` records are durable.
    Acked {
        accepted: u64,
        rejected: u64,
        /// Round trip of the request that was acknowledged.
        latency: Duration,
        retries: u32,
    },
    /// Refused for good (400/413) or retried past the limit.
    Failed { reason: String, retries: u32 },
}

#[derive(serde::Deserialize)]
struct CollectAnswer {
    accepted: u64,
    #[serde(default)]
    rejected_total: u64,
}

/// Posts `body` to `url`, retrying connection errors, 5xx and 503 (after
/// `Retry-After`) with exponential backoff. Every attempt carries the same
/// random `Idempotency-Key`, so when an attempt the client saw fail was
/// stored after all (its answer was lost, or the bus stored it after the
/// collector gave up waiting), the lake keeps one copy of each record (see
/// `logpipe_core::dedup`).
pub async fn send_batch(
    client: &reqwest::Client,
    url: &str,
    body: bytes::Bytes,
    policy: &RetryPolicy,
    mut stop: Option<watch::Receiver<bool>>,
) -> SendOutcome {
    let started = Instant::now();
    let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff);
    let mut retries = 0u32;
    let key = format!("{:032x}", fastrand::u128(..));
    loop {
        let attempt = Instant::now();
        let result = client
            .post(url)
            .header("content-type", "application/json")
            .header(logpipe_core::dedup::IDEMPOTENCY_KEY, &key)
            .body(body.clone())
            .send()
            .await;
        let delay = backoff.next_delay();
        let (reason, wait) = match result {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = response.text().await.unwrap_or_default();
                if status.as_u16() == 200 || status.as_u16() == 422 {
                    return match serde_json::from_str::<CollectAnswer>(&text) {
                        Ok(answer) => SendOutcome::Acked {
                            accepted: answer.accepted,
                            rejected: answer.rejected_total,
                            latency: attempt.elapsed(),
                            retries,
                        },
                        Err(error) => SendOutcome::Failed {
                            reason: format!("unreadable answer ({error}): {text}"),
                            retries,
                        },
                    };
                }
                if status.is_client_error() {
                    return SendOutcome::Failed {
                        reason: format!("{status}: {text}"),
                        retries,
                    };
                }
                (
                    format!("{status}: {text}"),
                    retry_after.unwrap_or(delay).min(policy.max_backoff),
                )
            }
            Err(error) => (format!("{error}"), delay),
        };
        if policy
            .give_up_after
            .is_some_and(|limit| started.elapsed() + wait > limit)
        {
            return SendOutcome::Failed {
                reason: format!("gave up after {retries} retries: {reason}"),
                retries,
            };
        }
        retries += 1;
        generator_metrics().send_retries.inc();
        tracing::debug!(url, %reason, ?wait, "send failed; retrying");
        match stop.as_mut() {
            Some(stop) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {
                        return SendOutcome::Failed { reason: format!("stopped while retrying: {reason}"), retries };
                    }
                }
            }
            None => tokio::time::sleep(wait).await,
        }
    }
}

/// Settings of a load run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Collector base URL, e.g. `http://127.0.0.1:8081`.
    pub target: String,
    pub count: u64,
    pub kind: RecordKind,
    /// Records per second; `None` sends as fast as acknowledgements allow.
    pub rate: Option<f64>,
    pub batch_size: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub synthetic: SyntheticOptions,
    /// API token (`Authorization: Bearer`) when the collector asks for one.
    pub token: Option<String>,
    /// CA certificates trusted besides the public roots (`--ca-file`).
    pub roots: Vec<reqwest::Certificate>,
}

/// The outcome of a load run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub requested: u64,
    pub acked: u64,
    pub rejected: u64,
    pub failed_records: u64,
    /// Records never sent: the run stops at the first batch that fails
    /// (given up after retrying, or refused), since the batches after it
    /// would meet the same target.
    pub not_sent: u64,
    pub retries: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub first_failure: Option<String>,
}

impl LoadReport {
    /// Latency at quantile `q` (0..=1) of acknowledged requests.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted.get(index).copied()
    }

    pub fn records_per_second(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether every record was sent and acknowledged.
    pub fn complete(&self) -> bool {
        self.acked == self.requested && self.not_sent == 0
    }

    /// The human summary `logpipe generate` prints.
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                .unwrap_or("-".into())
        };
        let not_sent = match self.not_sent {
            0 => String::new(),
            n => format!(", {n} not sent: the run stopped at the first failed batch"),
        };
        let mut text = format!(
            "acked {} of {} records ({} rejected by validation, {} failed{not_sent}), {} retries\n\
             elapsed {:.2} s, {:.0} records/s; ack latency p50 {}, p99 {}, max {}",
            self.acked,
            self.requested + self.not_sent,
            self.rejected,
            self.failed_records,
            self.retries,
            self.elapsed.as_secs_f64(),
            self.records_per_second(),
            ms(self.latency_quantile(0.5)),
            ms(self.latency_quantile(0.99)),
            ms(self.latency_quantile(1.0)),
        );
        if let Some(failure) = &self.first_failure {
            text.push_str(&format!("\nfirst failure: {failure}"));
        }
        text
    }
}

/// Sends `options.count` records and waits for every acknowledgement. The
/// first batch that fails (given up after `options.retry`, or refused)
/// ends the run: batches already in flight finish, no new one starts, and
/// the report counts the rest as not sent. Without that, a target down for
/// good would cost the retry time once per remaining batch.
pub async fn run_load(options: LoadOptions) -> LoadReport {
    let client = crate::client(
        reqwest::Client::builder()
            .pool_max_idle_per_host(options.concurrency)
            .timeout(Duration::from_secs(60)),
        options.token.as_deref(),
        &options.roots,
    );
    let url = crate::collect_url(&options.target, options.kind);
    let batch_size = options.batch_size.max(1) as u64;
    let batches = options.count.div_ceil(batch_size);
    let next_batch = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..options.concurrency.max(1) {
        let client = client.clone();
        let url = url.clone();
        let options = options.clone();
        let next_batch = next_batch.clone();
        let failed = failed.clone();
        workers.spawn(async move {
            let mut report = LoadReport::default();
            let mut synthetic = options.synthetic.clone();
            synthetic.id_prefix = format!("{}-w{worker}", synthetic.id_prefix);
            let mut source = SyntheticSource::new(synthetic);
            let mut text = String::new();
            loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let batch = next_batch.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    break;
                }
                let records = batch_size.min(options.count - batch * batch_size);
                if let Some(rate) = options.rate {
                    let due = Duration::from_secs_f64((batch * batch_size) as f64 / rate.max(1e-9));
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                text.clear();
                source.at_index(batch * batch_size);
                source.write_batch(options.kind, records as usize, &mut text);
                // Hand the buffer over instead of copying the whole body.
                let body = bytes::Bytes::from(std::mem::take(&mut text).into_bytes());
                report.requested += records;
                match send_batch(&client, &url, body, &options.retry, None).await {
                    SendOutcome::Acked {
                        accepted,
                        rejected,
                        latency,
                        retries,
                    } => {
                        report.acked += accepted;
                        report.rejected += rejected;
                        report.retries += u64::from(retries);
                        report.latencies.push(latency);
                    }
                    SendOutcome::Failed { reason, retries } => {
                        failed.store(true, Ordering::Relaxed);
                        report.failed_records += records;
                        report.retries += u64::from(retries);
                        report.first_failure.get_or_insert(reason);
                    }
                }
            }
            report
        });
    }
    let mut total = LoadReport::default();
    while let Some(result) = workers.join_next().await {
        let Ok(report) = result else { continue };
        total.requested += report.requested;
        total.acked += report.acked;
        total.rejected += report.rejected;
        total.failed_records += report.failed_records;
        total.retries += report.retries;
        total.latencies.extend(report.latencies);
        if total.first_failure.is_none() {
            total.first_failure = report.first_failure;
        }
    }
    total.not_sent = options.count - total.requested;
    total.elapsed = started.elapsed();
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A collector that is down (503), then refuses connections' worth of
    /// errors, then accepts: the batch must arrive once, after retries.
    #[tokio::test]
    async fn send_batch_retries_503_and_honours_retry_after() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().route(
            "/api/collect/logs",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    let call = counter.fetch_add(1, Ordering::SeqCst);
                    if call < 2 {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "0")],
                            "{\"error\": \"busy\"}",
                        )
                            .into_response()
                    } else {
                        axum::Json(
                            serde_json::json!({"accepted": 3, "rejected": [], "rejected_total": 0}),
                        )
                        .into_response()
                    }
                }
            }),
        );
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            give_up_after: Some(Duration::from_secs(10)),
        };
        let outcome = send_batch(
            &client,
            &format!("http://{address}/api/collect/logs"),
            bytes::Bytes::from_static(b"[]"),
            &policy,
            None,
        )
        .await;
        let SendOutcome::Acked {
            accepted, retries, ..
        } = outcome
        else {
            panic!("expected an acknowledgement, got {outcome:?}");
        };
        assert_eq!((accepted, retries), (3, 2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn send_batch_gives_up_on_a_collector_that_stays_down() {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            give_up_after: Some(Duration::from_millis(200)),
        };
        let outcome = send_batch(
            &reqwest::Client::new(),
            &format!("http://{address}/api/collect/logs"),
            bytes::Bytes::from_static(b"[]"),
            &policy,
            None,
        )
        .await;
        match outcome {
            SendOutcome::Failed { reason, retries } => {
                assert!(retries >= 2, "it retried with backoff before giving up");
                assert!(reason.contains("gave up"), "{reason}");
            }
            other => panic!("expected failure, got {other:?}"),
        }
    }

    /// A collector that stays down: the run stops at the first batch that
    /// gives up instead of spending the retry time on each of the rest,
    /// and says how many records it never sent.
    #[tokio::test]
    async fn a_run_stops_at_the_first_batch_that_fails() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let report = run_load(LoadOptions {
            target: format!("http://{address}"),
            count: 1_000,
            kind: RecordKind::Log,
            rate: None,
            batch_size: 10,
            concurrency: 2,
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                give_up_after: Some(Duration::from_millis(200)),
            },
            synthetic: SyntheticOptions::default(),
            token: None,
            roots: Vec::new(),
        })
        .await;
        // Each of the two workers gave up on the one batch it had sent.
        assert_eq!(report.requested, 20, "{}", report.summary());
        assert_eq!(report.failed_records, 20);
        assert_eq!(report.not_sent, 980);
        assert!(!report.complete());
        assert!(
            report.summary().contains("980 not sent"),
            "{}",
            report.summary()
        );
    }
}
