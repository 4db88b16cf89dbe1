//! What every stream job does with its consumer: resume at the offsets of
//! its last lake commit, poll until shutdown and then drain, apply the
//! data-loss policy, and report progress to the bus.

use std::time::Duration;

use logpipe_bus::{BusError, ConsumedRecord, Consumer, Rebalance, TopicPartition};
use logpipe_lake::Offsets;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::raw_to_lake::{DataLossPolicy, StreamError};

/// Records fetched per poll: large enough to amortise the read, small
/// enough that one poll's memory stays in the megabytes.
pub(crate) const POLL_MAX_RECORDS: usize = 16_384;
/// On shutdown, keep draining while records still arrive, at most this long.
const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Where `offsets` (a commit's) says `tp` resumes.
pub(crate) fn offset_of(offsets: &Offsets, tp: &TopicPartition) -> Option<u64> {
    offsets.get(&tp.topic)?.get(&tp.partition).copied()
}

/// Seeks each assigned partition to its offset in `committed` (the job's
/// last commit), or to the oldest kept offset when the commit has none, and
/// returns where each assigned partition starts. Partitions not assigned
/// (another group member's) are left out.
pub(crate) fn resume(
    consumer: &mut dyn Consumer,
    committed: &Offsets,
) -> Result<Offsets, BusError> {
    let mut positions = Offsets::new();
    for tp in consumer.assignment() {
        let offset = match offset_of(committed, &tp) {
            Some(offset) => offset,
            None => consumer.start_offsets(&tp.topic)?[tp.partition as usize],
        };
        consumer.seek(&tp.topic, tp.partition, offset)?;
        positions
            .entry(tp.topic)
            .or_default()
            .insert(tp.partition, offset);
    }
    Ok(positions)
}

/// Reports `positions` to the consumer group (for lag monitoring only: the
/// lake commit is the source of truth).
pub(crate) async fn report_progress(consumer: &mut dyn Consumer, positions: &Offsets) {
    let offsets: Vec<(TopicPartition, u64)> = positions
        .iter()
        .flat_map(|(topic, partitions)| {
            partitions.iter().map(|(partition, offset)| {
                (
                    TopicPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    },
                    *offset,
                )
            })
        })
        .collect();
    if let Err(error) = consumer.commit(&offsets).await {
        tracing::warn!(%error, "could not record consumer progress (lag reporting only)");
    }
}

/// The outcome of one [`Poller::poll`].
pub(crate) enum Polled {
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
pub(crate) struct Poller {
    job: &'static str,
    on_data_loss: DataLossPolicy,
    draining_since: Option<Instant>,
}

impl Poller {
    pub(crate) fn new(job: &'static str, on_data_loss: DataLossPolicy) -> Poller {
        Poller {
            job,
            on_data_loss,
            draining_since: None,
        }
    }

    /// Waits up to `wait` for records (200 ms per poll while draining).
    pub(crate) async fn poll(
        &mut self,
        consumer: &mut dyn Consumer,
        wait: Duration,
        shutdown: &mut watch::Receiver<bool>,
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

    /// True once draining is over: the last poll was empty, or draining
    /// took too long.
    pub(crate) fn finishing(&self, drained: bool) -> bool {
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
