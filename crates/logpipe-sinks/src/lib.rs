//! Sinks: where a step's output goes besides the lake.
//!
//! A job's step (the window job's closed windows and alerts, a batch
//! report's rows, a job run) is written to the lake by the job itself, as
//! part of its commit. Everything else that should receive it is a
//! [`StepSink`] in a list the application builds from config:
//!
//! | sink | receives | delivery |
//! |---|---|---|
//! | [`postgres::PostgresSink`] | table rows: upserted by key, or a report period replaced | blocking |
//! | [`bus_topic::BusTopicSink`] | alerts, on `alerts.realtime` | best effort |
//! | [`webhook::WebhookSink`] | alerts, in Alertmanager's format | best effort |
//! | [`webhook::rows::RowsWebhook`] | a job's rows, as JSON (`-- webhook:`) | blocking |
//!
//! **Contract.** A sink must be idempotent on replay: after a restart the
//! job re-delivers its last step with the same keys and the same
//! `alert_id`s. A *blocking* sink holds the job: it takes no further step
//! until the sink has this one ([`deliver_all`] retries it with backoff),
//! so its table never misses a step. A *best-effort* sink's failure is
//! logged and counted; the lake holds the data anyway.
//!
//! A new sink (ClickHouse, Elasticsearch, a MariaDB upsert for CDC) is one
//! more folder here implementing [`StepSink`].

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use logpipe_core::error::{Classify, ErrorKind};
use logpipe_core::job::Shutdown;
use logpipe_core::retry::Backoff;
use logpipe_core::tables::AlertMessage;

pub mod bus_topic;
pub mod metrics;
pub mod postgres;
pub mod webhook;

/// How a sink's failures affect the job that feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The job takes no further step until this sink has the step.
    Blocking,
    /// Logged and counted; the lake holds the data anyway.
    BestEffort,
}

/// How rows replace what a sink already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowWrite {
    /// Insert, or replace the row with the same key.
    Upsert { key: &'static [&'static str] },
    /// [`RowWrite::Upsert`] into a table the sink creates from the rows'
    /// schema (unique on `key`, NULLs equal) and to which it adds columns
    /// the rows have and it lacks: a streaming SQL job's table.
    UpsertCreating { key: &'static [&'static str] },
    /// Replace every row whose `column` is `value` (a report's period).
    ReplacePeriod { column: &'static str, value: String },
}

/// Rows of one table in a step.
#[derive(Debug, Clone)]
pub struct TableRows<'a> {
    /// The table's name in the sink (`window_stats`, `daily_report`, …).
    pub name: &'static str,
    pub batch: &'a RecordBatch,
    pub write: RowWrite,
}

/// What one step of a job produced.
#[derive(Debug, Clone)]
pub struct StepOutput<'a> {
    /// The job and its step number: a replay after a restart carries the
    /// same pair and the same rows.
    pub job: &'a str,
    pub step: u64,
    pub tables: Vec<TableRows<'a>>,
    pub alerts: &'a [AlertMessage],
}

/// Why a sink did not take a step.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
    #[error(transparent)]
    Bus(#[from] logpipe_bus::BusError),
    #[error("{0}")]
    Webhook(String),
    #[error("the {0} sink has stopped")]
    Stopped(&'static str),
}

impl Classify for SinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            SinkError::Postgres(error) => error.kind(),
            SinkError::Bus(error) => error.kind(),
            SinkError::Webhook(_) => ErrorKind::Transient,
            SinkError::Stopped(_) => ErrorKind::Internal,
        }
    }
}

/// A destination of step outputs (see the crate docs for the contract).
#[async_trait::async_trait]
pub trait StepSink: Send + Sync {
    /// Names the sink in logs and messages.
    fn name(&self) -> &'static str;

    fn delivery(&self) -> Delivery;

    /// Takes the step. Must be idempotent: the same step may come again
    /// after a restart.
    async fn deliver(&self, output: &StepOutput<'_>) -> Result<(), SinkError>;
}

/// How a blocking sink is retried: from half a second (a PostgreSQL
/// restart takes seconds) doubling up to 30 s (a longer outage should not
/// cost a request a second).
pub const BLOCKING_RETRY: Backoff =
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// Delivers `output` to every sink: the blocking ones first, each retried
/// with [`BLOCKING_RETRY`] until it takes the step; then the best-effort
/// ones once. Returns false when `shutdown` came while a blocking sink was
/// retried (the job stops; its next start re-delivers the step).
pub async fn deliver_all(
    sinks: &[Arc<dyn StepSink>],
    output: &StepOutput<'_>,
    shutdown: &mut Shutdown,
) -> bool {
    deliver_all_with(sinks, output, shutdown, &BLOCKING_RETRY).await
}

/// [`deliver_all`] with another retry schedule.
pub async fn deliver_all_with(
    sinks: &[Arc<dyn StepSink>],
    output: &StepOutput<'_>,
    shutdown: &mut Shutdown,
    retry: &Backoff,
) -> bool {
    let blocking = sinks.iter().filter(|s| s.delivery() == Delivery::Blocking);
    for sink in blocking {
        let mut backoff = retry.clone();
        while let Err(error) = sink.deliver(output).await {
            let retry_in = backoff.next_delay();
            tracing::warn!(
                sink = sink.name(),
                job = output.job,
                step = output.step,
                %error,
                kind = %error.kind(),
                ?retry_in,
                "a sink the job waits for refused the step; retrying"
            );
            if *shutdown.borrow() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = shutdown.changed() => return false,
            }
        }
    }
    let best_effort = sinks
        .iter()
        .filter(|s| s.delivery() == Delivery::BestEffort);
    for sink in best_effort {
        if let Err(error) = sink.deliver(output).await {
            tracing::warn!(
                sink = sink.name(),
                job = output.job,
                step = output.step,
                %error,
                "a sink did not take the step (the lake has it)"
            );
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Fails its first `failures` deliveries, then records each step.
    struct Flaky {
        delivery: Delivery,
        failures: Mutex<u32>,
        took: Mutex<Vec<u64>>,
    }

    #[async_trait::async_trait]
    impl StepSink for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn delivery(&self) -> Delivery {
            self.delivery
        }
        async fn deliver(&self, output: &StepOutput<'_>) -> Result<(), SinkError> {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(SinkError::Stopped("flaky"));
            }
            self.took.lock().unwrap().push(output.step);
            Ok(())
        }
    }

    fn flaky(delivery: Delivery, failures: u32) -> Arc<Flaky> {
        Arc::new(Flaky {
            delivery,
            failures: Mutex::new(failures),
            took: Mutex::new(Vec::new()),
        })
    }

    fn output(step: u64) -> StepOutput<'static> {
        StepOutput {
            job: "windows",
            step,
            tables: Vec::new(),
            alerts: &[],
        }
    }

    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));

    #[tokio::test]
    async fn a_blocking_sink_is_retried_until_it_takes_the_step_and_best_effort_ones_once() {
        let blocking = flaky(Delivery::Blocking, 3);
        let best_effort = flaky(Delivery::BestEffort, 1);
        let sinks: Vec<Arc<dyn StepSink>> = vec![best_effort.clone(), blocking.clone()];
        let (_stop, mut shutdown) = tokio::sync::watch::channel(false);
        assert!(deliver_all_with(&sinks, &output(1), &mut shutdown, &FAST).await);
        assert!(deliver_all_with(&sinks, &output(2), &mut shutdown, &FAST).await);
        assert_eq!(*blocking.took.lock().unwrap(), [1, 2]);
        assert_eq!(*best_effort.took.lock().unwrap(), [2], "step 1 was dropped");
    }

    #[tokio::test]
    async fn shutdown_interrupts_a_blocking_retry() {
        let blocking = flaky(Delivery::Blocking, u32::MAX);
        let sinks: Vec<Arc<dyn StepSink>> = vec![blocking.clone()];
        let (stop, mut shutdown) = tokio::sync::watch::channel(false);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stop.send(true);
        });
        assert!(!deliver_all_with(&sinks, &output(1), &mut shutdown, &FAST).await);
        stopper.await.unwrap();
        assert!(blocking.took.lock().unwrap().is_empty());
    }
}
