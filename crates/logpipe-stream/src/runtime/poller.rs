//! Polling until shutdown and then draining what the bus still holds, with
//! the data-loss policy applied to offsets retention deleted.

use std::time::Duration;

use logpipe_bus::{BusError, ConsumedRecord, Consumer, Rebalance};
use logpipe_config::DataLossPolicy;
use logpipe_core::job::Shutdown;
use logpipe_lake::Offsets;
use tokio::time::Instant;

use crate::error::StreamError;

/// Records fetched per poll: large enough to amortise the read, small
/// enough that one poll's memory stays in the megabytes.
pub const POLL_MAX_RECORDS: usize = 16_384;

/// On shutdown, keep draining while records still arrive, at most this long.
const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The outcome of one [`Poller::poll`].
pub enum Polled {
    Records(Vec<ConsumedRecord>),
    /// Shutdown began: poll again to drain.
    ShutdownStarted,
    /// Records deleted by retention were skipped (`skip_ahead`).
    Skipped {
        topic: String,
        lost: u64,
    },
    /// The group moves partitions: answer with `rebalance_done`.
    Rebalance(Rebalance),
}

/// Polls until shutdown, then drains what the bus still holds.
pub struct Poller {
    job: &'static str,
    on_data_loss: DataLossPolicy,
    draining_since: Option<Instant>,
}

impl Poller {
    pub fn new(job: &'static str, on_data_loss: DataLossPolicy) -> Poller {
        Poller {
            job,
            on_data_loss,
            draining_since: None,
        }
    }

    /// Waits up to `wait` for records (200 ms per poll while draining).
    pub async fn poll(
        &mut self,
        consumer: &mut dyn Consumer,
        wait: Duration,
        shutdown: &mut Shutdown,
        positions: &mut Offsets,
    ) -> Result<Polled, StreamError> {
        let polled = if self.draining_since.is_some() {
            consumer
                .poll(POLL_MAX_RECORDS, Duration::from_millis(200))
                .await
        } else {
            tokio::select! {
                polled = consumer.poll(POLL_MAX_RECORDS, wait.max(Duration::from_millis(1))) => polled,
                _ = shutdown.changed() => {
                    self.draining_since = Some(Instant::now());
                    return Ok(Polled::ShutdownStarted);
                }
            }
        };
        if let Some(event) = consumer.rebalance() {
            return Ok(Polled::Rebalance(event));
        }
        match polled {
            Ok(records) => Ok(Polled::Records(records)),
            Err(error @ BusError::OffsetOutOfRange { .. }) => {
                self.skip_lost(error, consumer, positions)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// [`Poller::poll`] for a reader of every partition (no group): the
    /// records, or `None` when there are none to look at this time (shutdown
    /// began, retention skipped some, or a rebalance — a reader has no
    /// partitions to hand back).
    pub async fn poll_reader(
        &mut self,
        consumer: &mut dyn Consumer,
        wait: Duration,
        shutdown: &mut Shutdown,
        positions: &mut Offsets,
    ) -> Result<Option<Vec<ConsumedRecord>>, StreamError> {
        match self.poll(consumer, wait, shutdown, positions).await? {
            Polled::Records(records) => Ok(Some(records)),
            Polled::ShutdownStarted | Polled::Skipped { .. } => Ok(None),
            Polled::Rebalance(_) => {
                consumer.rebalance_done(Vec::new())?;
                Ok(None)
            }
        }
    }

    /// True once draining is over: the last poll was empty, or draining
    /// took too long.
    pub fn finishing(&self, drained: bool) -> bool {
        self.draining_since
            .is_some_and(|since| drained || since.elapsed() >= SHUTDOWN_DRAIN_LIMIT)
    }

    fn skip_lost(
        &self,
        error: BusError,
        consumer: &mut dyn Consumer,
        positions: &mut Offsets,
    ) -> Result<Polled, StreamError> {
        let BusError::OffsetOutOfRange {
            topic,
            partition,
            requested,
            log_start,
        } = &error
        else {
            return Err(error.into());
        };
        match self.on_data_loss {
            DataLossPolicy::Fail => Err(StreamError::DataLoss(error)),
            DataLossPolicy::SkipAhead => {
                let lost = log_start - requested;
                tracing::error!(
                    job = self.job,
                    topic,
                    partition,
                    requested,
                    log_start,
                    lost,
                    "records deleted by retention before the job read them; skipping ahead"
                );
                consumer.seek(topic, *partition, *log_start)?;
                positions
                    .entry(topic.clone())
                    .or_default()
                    .insert(*partition, *log_start);
                Ok(Polled::Skipped {
                    topic: topic.clone(),
                    lost,
                })
            }
        }
    }
}
