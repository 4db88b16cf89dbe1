//! What every stream job does with its consumer: resume at the offsets of
//! its last lake commit, poll until shutdown and then drain, apply the
//! data-loss policy, and report progress to the bus; and reading exact
//! offset ranges again (a roll-forward, the duplicate check's warm-up).

use std::collections::BTreeMap;
use std::time::Duration;

use logpipe_bus::{Bus, BusError, ConsumedRecord, Consumer, Rebalance, TopicPartition};
use logpipe_lake::Offsets;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::raw_to_lake::{DataLossPolicy, StreamError};

/// Records fetched per poll: large enough to amortise the read, small
/// enough that one poll's memory stays in the megabytes.
pub(crate) const POLL_MAX_RECORDS: usize = 16_384;
/// On shutdown, keep draining while records still arrive, at most this long.
const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Offset ranges: topic → partition → `[from, to)` (a commit record's
/// `ranges` has this shape).
pub(crate) type Ranges = BTreeMap<String, BTreeMap<u32, (u64, u64)>>;

/// How [`read_ranges`] reads.
pub(crate) struct RangeRead {
    /// Fail when the bus has not returned every range by then.
    pub(crate) limit: Duration,
    /// Start a range that begins below its partition's oldest kept offset
    /// there; without it, the bus reports the deleted records as an error.
    pub(crate) from_oldest: bool,
    /// End early after this many empty polls in a row (a range whose last
    /// offsets hold no record: transaction markers, compaction).
    pub(crate) idle_polls: Option<u32>,
}

/// Reads `ranges` with a reader of its own (no group membership) and hands
/// each record in them to `each`, in offset order within a partition. The
/// other partitions of the topics are skipped where the bus knows their
/// end. Returns the records handed over; when `how.limit` passes first,
/// fails with `timeout(the ranges not read)`.
pub(crate) async fn read_ranges(
    bus: &dyn Bus,
    ranges: &Ranges,
    how: RangeRead,
    timeout: impl FnOnce(String) -> StreamError,
    each: impl FnMut(&ConsumedRecord) -> Result<(), StreamError>,
) -> Result<u64, StreamError> {
    let topics: Vec<&str> = ranges.keys().map(String::as_str).collect();
    let mut reader = bus.reader("logpipe-range-reader", &topics).await?;
    let read = read_with(bus, &mut *reader, ranges, how, timeout, each).await;
    reader.close().await;
    read
}

/// [`read_ranges`] with its reader.
async fn read_with(
    bus: &dyn Bus,
    reader: &mut dyn Consumer,
    ranges: &Ranges,
    how: RangeRead,
    timeout: impl FnOnce(String) -> StreamError,
    mut each: impl FnMut(&ConsumedRecord) -> Result<(), StreamError>,
) -> Result<u64, StreamError> {
    let mut remaining = Ranges::new();
    let mut oldest: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for tp in reader.assignment() {
        match ranges.get(&tp.topic).and_then(|p| p.get(&tp.partition)) {
            Some(&(from, to)) => {
                let from = if how.from_oldest {
                    if !oldest.contains_key(&tp.topic) {
                        oldest.insert(tp.topic.clone(), reader.start_offsets(&tp.topic)?);
                    }
                    let kept = oldest[&tp.topic].get(tp.partition as usize).copied();
                    from.max(kept.unwrap_or(0))
                } else {
                    from
                };
                if from < to {
                    reader.seek(&tp.topic, tp.partition, from)?;
                    remaining
                        .entry(tp.topic.clone())
                        .or_default()
                        .insert(tp.partition, (from, to));
                } else {
                    // Nothing to read: records from `to` on are ignored.
                    reader.seek(&tp.topic, tp.partition, to)?;
                }
            }
            None => {
                // Records of these partitions are ignored: skip them when the
                // bus knows where they end (a Kafka bus learns it later).
                if let Some(end) = bus
                    .end_offsets(&tp.topic)
                    .ok()
                    .and_then(|ends| ends.get(tp.partition as usize).copied())
                {
                    reader.seek(&tp.topic, tp.partition, end)?;
                }
            }
        }
    }
    let deadline = Instant::now() + how.limit;
    let mut handed = 0u64;
    let mut empty_polls = 0;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(timeout(format!(
                "the bus did not return the ranges {remaining:?} within {:?}",
                how.limit
            )));
        }
        let records = reader
            .poll(POLL_MAX_RECORDS, Duration::from_millis(500))
            .await?;
        if records.is_empty() {
            empty_polls += 1;
            if how.idle_polls.is_some_and(|idle| empty_polls >= idle) {
                tracing::info!(
                    ?remaining,
                    "no more records before the end of these ranges; reading stops there"
                );
                break;
            }
            continue;
        }
        empty_polls = 0;
        for record in &records {
            let Some(partitions) = remaining.get_mut(&*record.topic) else {
                continue;
            };
            let Some(&(_, to)) = partitions.get(&record.partition) else {
                continue;
            };
            if record.offset < to {
                each(record)?;
                handed += 1;
            }
            if record.offset + 1 >= to {
                partitions.remove(&record.partition);
                if partitions.is_empty() {
                    remaining.remove(&*record.topic);
                }
            }
        }
    }
    Ok(handed)
}

/// Returns what a job read with `consumer`, closing the consumer first if
/// it failed: a group member then leaves at once (its partitions move
/// without waiting for the session timeout), and a subscribed Kafka
/// consumer must not be dropped without closing it. A job that ends well
/// closes its consumer itself, after its last commit.
pub(crate) async fn closed_on_error<T>(
    consumer: &mut dyn Consumer,
    read: Result<T, StreamError>,
) -> Result<T, StreamError> {
    if read.is_err() {
        consumer.close().await;
    }
    read
}

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
