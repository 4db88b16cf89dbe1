//! The scheduled generator that `logpipe up` runs (SPEC §1.2).

use std::time::Duration;

use logpipe_config::GeneratorConfig;
use logpipe_core::RecordKind;
use tokio::sync::watch;

use crate::load::{RetryPolicy, SendOutcome, send_batch};
use crate::metrics::generator_metrics;
use crate::synthetic::{SyntheticOptions, SyntheticSource};

/// Runs until `stop` turns true: a batch of logs every `log_interval` and
/// of events every `event_interval`, to `target`. A batch that cannot be
/// delivered is retried with backoff until it is, or until shutdown.
/// `token`: sent as `Authorization: Bearer` when the collector asks for one.
/// `roots`: CA certificates trusted besides the public roots (an HTTPS
/// collector with a private certificate).
pub async fn run(
    config: GeneratorConfig,
    target: String,
    token: Option<String>,
    roots: Vec<reqwest::Certificate>,
    stop: watch::Receiver<bool>,
) {
    let client = crate::client(
        reqwest::Client::builder().timeout(Duration::from_secs(30)),
        token.as_deref(),
        &roots,
    );
    let synthetic = SyntheticOptions {
        services: config.services.clone(),
        error_rate: config.error_rate,
        incidents: config.incidents.clone(),
        ..SyntheticOptions::default()
    };
    let logs = tokio::spawn(run_kind(
        RecordKind::Log,
        config.log_interval,
        config.batch_size,
        synthetic.clone(),
        target.clone(),
        client.clone(),
        stop.clone(),
    ));
    let events = tokio::spawn(run_kind(
        RecordKind::Event,
        config.event_interval,
        config.batch_size,
        synthetic,
        target,
        client,
        stop,
    ));
    let _ = tokio::join!(logs, events);
}

async fn run_kind(
    kind: RecordKind,
    interval: Duration,
    batch_size: usize,
    synthetic: SyntheticOptions,
    target: String,
    client: reqwest::Client,
    mut stop: watch::Receiver<bool>,
) {
    let url = crate::collect_url(&target, kind);
    let policy = RetryPolicy {
        give_up_after: None,
        ..RetryPolicy::default()
    };
    let mut source = SyntheticSource::new(synthetic);
    let mut ticker = tokio::time::interval(interval);
    // A long outage must not be followed by a burst of catch-up batches.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let mut text = String::new();
        source.write_batch(kind, batch_size, &mut text);
        match send_batch(&client, &url, text.into(), &policy, Some(stop.clone())).await {
            SendOutcome::Acked {
                accepted, retries, ..
            } => {
                generator_metrics()
                    .records_sent
                    .add(&[kind.topic()], accepted);
                if retries > 0 || warned {
                    tracing::info!(%kind, retries, "generator delivered again after retries");
                    warned = false;
                }
            }
            SendOutcome::Failed { reason, .. } => {
                if *stop.borrow() {
                    return;
                }
                if !warned {
                    tracing::warn!(%kind, %reason, "generator batch refused");
                    warned = true;
                }
            }
        }
    }
}
