//! A group member or a reader of every partition: polling on a blocking
//! thread, seeks, commits for lag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::context::client_config;
use super::gaps::{PartitionSpan, count_skipped, partition_spans};
use super::headers::our_headers;
use super::rebalance::{
    Membership, PendingRebalance, REBALANCES_IN_FLIGHT, RebalanceContext, Shared, is_cooperative,
};
use super::{HashMap, KafkaBus, METADATA_TIMEOUT, kafka_error, lock};
use crate::{BusError, ConsumedRecord, Consumer, Rebalance, Result, TopicPartition};

pub(super) type PollResult = std::result::Result<Vec<ConsumedRecord>, KafkaError>;

/// A [`Consumer`] on Kafka (see the module docs).
pub struct KafkaConsumer {
    consumer: Arc<BaseConsumer<RebalanceContext>>,
    shared: Arc<Shared>,
    membership: Membership,
    requests: mpsc::Receiver<PendingRebalance>,
    pending: Option<PendingRebalance>,
    /// The poll running on a blocking thread; kept across calls so a
    /// cancelled `poll` loses nothing.
    inflight: Option<tokio::task::JoinHandle<PollResult>>,
    /// Next offset per partition as the job sees it (after the records
    /// returned, or where it seeked).
    positions: HashMap<TopicPartition, u64>,
    /// A `seek` happened: re-assign before the next poll.
    reassign: bool,
}

impl KafkaConsumer {
    pub(super) fn open(
        bus: &KafkaBus,
        group: &str,
        topics: &[&str],
        membership: Membership,
    ) -> Result<Self> {
        let options = &bus.inner.options;
        let (sender, requests) = mpsc::channel(REBALANCES_IN_FLIGHT);
        let shared = Arc::new(Shared {
            requests: sender,
            closing: AtomicBool::new(false),
            revoked: Mutex::new(Vec::new()),
            assignment: Mutex::new(Vec::new()),
        });
        let consumer: BaseConsumer<RebalanceContext> = client_config(
            options,
            &[
                ("group.id", group.to_string()),
                ("enable.auto.commit", "false".into()),
                ("enable.auto.offset.store", "false".into()),
                // Records of aborted transactions (requests answered 503)
                // and of open ones are never handed to a job. librdkafka's
                // default, stated because the collector's promise rests on it.
                ("isolation.level", "read_committed".into()),
                // The job decides where to start; an offset gone by
                // retention is reported, not silently reset.
                ("auto.offset.reset", "error".into()),
                (
                    "session.timeout.ms",
                    options.session_timeout.as_millis().to_string(),
                ),
                (
                    "heartbeat.interval.ms",
                    (options.session_timeout.as_millis() / 5)
                        .max(100)
                        .to_string(),
                ),
                // Incremental rebalances: partitions that do not move keep
                // being read while others change hands. `range` (eager) in
                // [bus.kafka.properties] works too.
                ("partition.assignment.strategy", "cooperative-sticky".into()),
                ("client.id", format!("logpipe-{group}")),
            ],
        )
        .create_with_context(RebalanceContext {
            shared: shared.clone(),
            log: bus.inner.context.clone(),
        })
        .map_err(|e| kafka_error("cannot create the Kafka consumer", e))?;
        match membership {
            Membership::Group => consumer
                .subscribe(topics)
                .map_err(|e| kafka_error("subscribing failed", e))?,
            // Assigned by `apply_positions` before the first poll.
            Membership::Reader => {
                let mut all = Vec::new();
                for topic in topics {
                    for partition in 0..bus.inner.partitions(topic)? {
                        all.push(TopicPartition {
                            topic: topic.to_string(),
                            partition,
                        });
                    }
                }
                *lock(&shared.assignment) = all;
            }
        }
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            shared,
            membership,
            requests,
            pending: None,
            inflight: None,
            // No position yet: a partition starts at the oldest kept offset.
            positions: HashMap::new(),
            reassign: membership == Membership::Reader,
        })
    }

    /// Assigns the current partitions at `positions` (how `seek` takes
    /// effect: reliable whatever state the fetcher is in).
    pub(super) fn apply_positions(&mut self) -> Result<()> {
        let assignment = lock(&self.shared.assignment).clone();
        let mut list = TopicPartitionList::new();
        for tp in &assignment {
            let offset = match self.positions.get(tp) {
                Some(offset) => Offset::Offset(*offset as i64),
                None => Offset::Beginning,
            };
            list.add_partition_offset(&tp.topic, tp.partition as i32, offset)
                .map_err(|e| kafka_error("building the assignment failed", e))?;
        }
        let assigned = if is_cooperative(&self.consumer) {
            // A cooperative group refuses `assign`: take the partitions out
            // and put them back at the new positions.
            self.consumer
                .incremental_unassign(&list)
                .and_then(|()| self.consumer.incremental_assign(&list))
        } else {
            self.consumer.assign(&list)
        };
        assigned.map_err(|e| kafka_error("assigning partitions failed", e))?;
        self.reassign = false;
        Ok(())
    }

    /// A broker may answer a fetch below a partition's oldest kept offset
    /// with the records that follow instead of `OFFSET_OUT_OF_RANGE` (tansu
    /// 0.6 did; Apache Kafka answers the error), which would skip records deleted by retention without a
    /// word. So the first record of each partition in a poll must be the one
    /// asked for. Where it is later, the oldest kept offset tells a gap left
    /// by retention (records lost: `OffsetOutOfRange`, which
    /// `lake.on_data_loss` handles) from one left by transaction markers or
    /// aborted transactions (nothing lost). Spark's Kafka source checks the
    /// same way. Costs a watermark request only when there is a gap.
    pub(super) async fn check_no_records_skipped(&self, spans: &[PartitionSpan]) -> Result<()> {
        let gaps: Vec<(TopicPartition, u64)> = spans
            .iter()
            .filter_map(|span| {
                let expected = *self.positions.get(&span.partition)?;
                (span.first > expected).then(|| (span.partition.clone(), expected))
            })
            .collect();
        if gaps.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            for (tp, requested) in gaps {
                let log_start = low_watermark(&consumer, &tp.topic, tp.partition)?;
                if log_start > requested {
                    return Err(BusError::OffsetOutOfRange {
                        topic: tp.topic,
                        partition: tp.partition,
                        requested,
                        log_start,
                    });
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| BusError::Kafka(format!("the watermark thread failed: {e}")))?
    }

    /// Which partition an offset-out-of-range error is about, and why: the
    /// first whose position lies below the oldest kept offset (retention
    /// deleted records the job had not read) or past the end of the log
    /// (the broker lost records the lake already holds, e.g. a topic that
    /// was deleted and created again).
    pub(super) fn out_of_range(&self) -> BusError {
        for (tp, requested) in &self.positions {
            let Ok((low, high)) =
                self.consumer
                    .fetch_watermarks(&tp.topic, tp.partition as i32, METADATA_TIMEOUT)
            else {
                continue;
            };
            let (low, high) = (low.max(0) as u64, high.max(0) as u64);
            if *requested < low {
                return BusError::OffsetOutOfRange {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    requested: *requested,
                    log_start: low,
                };
            }
            if *requested > high {
                return BusError::OffsetBeyondEnd {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    requested: *requested,
                    log_end: high,
                };
            }
        }
        BusError::Kafka(
            "the broker reported an offset out of range, but every partition's position is \
             within its oldest and newest offsets"
                .into(),
        )
    }
}

/// The oldest kept offset of a partition (its low watermark).
pub(super) fn low_watermark(
    consumer: &BaseConsumer<RebalanceContext>,
    topic: &str,
    partition: u32,
) -> Result<u64> {
    consumer
        .fetch_watermarks(topic, partition as i32, METADATA_TIMEOUT)
        .map(|(low, _)| low.max(0) as u64)
        .map_err(|e| kafka_error("reading the oldest offsets failed", e))
}

/// Polls until `max` records or `timeout`, on a blocking thread. Records
/// read from a partition before it was revoked are dropped: if it comes
/// back, it restarts where the job says.
pub(super) fn poll_blocking(
    consumer: &BaseConsumer<RebalanceContext>,
    shared: &Shared,
    max: usize,
    timeout: Duration,
) -> PollResult {
    let deadline = Instant::now() + timeout;
    let mut out: Vec<ConsumedRecord> = Vec::new();
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    loop {
        let wait = if out.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        let polled = consumer.poll(wait);
        {
            let mut revoked = lock(&shared.revoked);
            if !revoked.is_empty() {
                out.retain(|record| {
                    !revoked
                        .iter()
                        .any(|tp| tp.partition == record.partition && *tp.topic == *record.topic)
                });
                revoked.clear();
            }
        }
        match polled {
            Some(Ok(message)) => {
                let topic = match topics.get(message.topic()) {
                    Some(topic) => topic.clone(),
                    None => {
                        let topic: Arc<str> = Arc::from(message.topic());
                        topics.insert(message.topic().to_string(), topic.clone());
                        topic
                    }
                };
                out.push(ConsumedRecord {
                    topic,
                    partition: message.partition().max(0) as u32,
                    offset: message.offset().max(0) as u64,
                    key: Bytes::copy_from_slice(message.key().unwrap_or_default()),
                    value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                    headers: message.headers().map(our_headers).unwrap_or_default(),
                });
                // Hand over what arrived when the caller's time is up, even
                // if more keeps trickling in (a slow broker would otherwise
                // hold a flush back until `max` records had arrived).
                if out.len() >= max || Instant::now() >= deadline {
                    return Ok(out);
                }
            }
            Some(Err(error)) => {
                if is_out_of_range(&error) {
                    return Err(error);
                }
                tracing::warn!(%error, "Kafka consumer error (librdkafka retries by itself)");
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            None => {
                if !out.is_empty() || Instant::now() >= deadline {
                    return Ok(out);
                }
            }
        }
    }
}

pub(super) fn is_out_of_range(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}

#[async_trait]
impl Consumer for KafkaConsumer {
    fn assignment(&self) -> Vec<TopicPartition> {
        lock(&self.shared.assignment).clone()
    }

    fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let tp = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        if !lock(&self.shared.assignment).contains(&tp) {
            return Err(BusError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            });
        }
        self.positions.insert(tp, offset);
        self.reassign = true;
        Ok(())
    }

    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        if self.pending.is_some() {
            return Ok(Vec::new());
        }
        if self.inflight.is_none() {
            if self.reassign {
                self.apply_positions()?;
            }
            let consumer = self.consumer.clone();
            let shared = self.shared.clone();
            self.inflight = Some(tokio::task::spawn_blocking(move || {
                poll_blocking(&consumer, &shared, max_records, timeout)
            }));
        }
        let Some(task) = self.inflight.as_mut() else {
            return Ok(Vec::new());
        };
        let joined = tokio::select! {
            joined = task => joined,
            Some(request) = self.requests.recv() => {
                self.pending = Some(request);
                return Ok(Vec::new());
            }
        };
        self.inflight = None;
        let records = match joined {
            Ok(Ok(records)) => records,
            Ok(Err(error)) if is_out_of_range(&error) => return Err(self.out_of_range()),
            Ok(Err(error)) => return Err(kafka_error("polling failed", error)),
            Err(error) => {
                return Err(BusError::Kafka(format!("the poll thread failed: {error}")));
            }
        };
        let spans = partition_spans(&records);
        self.check_no_records_skipped(&spans).await?;
        count_skipped(&spans, &self.positions);
        // The last record of each partition sets its position.
        for span in spans {
            self.positions.insert(span.partition, span.last + 1);
        }
        Ok(records)
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        let assignment = lock(&self.shared.assignment).clone();
        let mut list = TopicPartitionList::new();
        for (tp, offset) in offsets {
            if assignment.contains(tp) {
                list.add_partition_offset(
                    &tp.topic,
                    tp.partition as i32,
                    Offset::Offset(*offset as i64),
                )
                .map_err(|e| kafka_error("building the commit failed", e))?;
            }
        }
        if list.count() == 0 {
            return Ok(());
        }
        match self.consumer.commit(&list, CommitMode::Async) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(error) => Err(kafka_error("committing offsets failed", error)),
        }
    }

    fn read_positions(&self) -> Vec<(TopicPartition, u64)> {
        // librdkafka's position moves past the transaction markers and
        // aborted records it skipped. While a poll runs, or before a seek
        // took effect, it is not the job's: the job's own positions stand.
        if self.inflight.is_some() || self.reassign || self.pending.is_some() {
            return Vec::new();
        }
        let Ok(list) = self.consumer.position() else {
            return Vec::new();
        };
        list.elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) if offset >= 0 => Some((
                    TopicPartition {
                        topic: element.topic().to_string(),
                        partition: element.partition() as u32,
                    },
                    offset as u64,
                )),
                _ => None,
            })
            .collect()
    }

    fn start_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        let partitions = self
            .consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| kafka_error("reading metadata failed", e))?
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        (0..partitions)
            .map(|partition| low_watermark(&self.consumer, topic, partition as u32))
            .collect()
    }

    fn rebalance(&self) -> Option<Rebalance> {
        self.pending.as_ref().map(|p| p.event.clone())
    }

    fn rebalance_done(&mut self, starts: Vec<(TopicPartition, Option<u64>)>) -> Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        match &pending.event {
            Rebalance::Revoke(revoked) => {
                for tp in revoked {
                    self.positions.remove(tp);
                }
            }
            Rebalance::Assign(_) => {
                for (tp, start) in &starts {
                    if let Some(start) = start {
                        self.positions.insert(tp.clone(), *start);
                    }
                }
            }
        }
        // The callback may already have given up waiting (consumer closing).
        let _ = pending.reply.send(starts);
        Ok(())
    }

    async fn close(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        if let Some(pending) = self.pending.take() {
            let _ = pending.reply.send(Vec::new());
        }
        if let Some(mut task) = self.inflight.take() {
            // A rebalance callback that began before `closing` was set may
            // be waiting for an answer inside this poll: answer it, or the
            // poll never ends.
            loop {
                tokio::select! {
                    _ = &mut task => break,
                    Some(request) = self.requests.recv() => {
                        let _ = request.reply.send(Vec::new());
                    }
                }
            }
        }
        let consumer = self.consumer.clone();
        let membership = self.membership;
        // Leave the group and let librdkafka finish it (dropping a
        // subscribed consumer without this can hang).
        let _ = tokio::task::spawn_blocking(move || {
            match membership {
                Membership::Group => consumer.unsubscribe(),
                Membership::Reader => {
                    let _ = consumer.unassign();
                }
            }
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(50));
            }
        })
        .await;
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // A job that failed without `close`: let any waiting rebalance go.
        self.shared.closing.store(true, Ordering::Release);
        if let Some(pending) = self.pending.take() {
            let _ = pending.reply.send(Vec::new());
        }
    }
}
