//! raw → lake: consume the raw topics, write Parquet by event hour.
//!
//! The job owns its position: at start it reads the lake's newest commit
//! record, rolls it forward if the process died half-way through it, and
//! seeks the consumer to the offsets it records. It then buffers records in
//! Arrow builders per (table, hour) and flushes every `flush_interval` (so a
//! record is queryable about that long after its acknowledgement) or when
//! `max_buffered_rows` are buffered (bounding memory).
//!
//! Before writing, it drops a second copy of a record a client retried
//! (same `logpipe.id` header, see [`logpipe_core::dedup`]); the filter is a
//! function of the log, rebuilt from the bus wherever the job starts reading
//! a partition, so restarts, rebalances and roll-forwards drop the same
//! copies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use logpipe_bus::{Bus, BusError, ConsumedRecord, Consumer, Rebalance, TopicPartition};
use logpipe_config::LakeConfig;
use logpipe_core::metrics::metrics;
use logpipe_core::record::{RecordKind, ValidationLimits};
use logpipe_core::schema::{BatchBuilder, Record};
use logpipe_core::time::{HourPartition, micros_to_rfc3339, now_micros};
use logpipe_lake::{CommitRecord, CommittedFile, FlushGroups, Lake, LakeError, Offsets};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::consume::{
    Polled, Poller, RangeRead, Ranges, closed_on_error, offset_of, read_ranges, report_progress,
    resume,
};
use crate::dedup::Dedups;
use crate::restart::{Restartable, run_restarting};

/// Invalid records logged per flush (all are counted in a metric).
const INVALID_LOGGED_PER_FLUSH: u64 = 5;

/// What to do when offsets the job needs were deleted by retention.
pub use logpipe_config::DataLossPolicy;

#[derive(Debug, Clone)]
pub struct RawToLakeOptions {
    /// Names the commit records and the files (`part-<job>-…`).
    pub job: String,
    /// Consumer group for lag reporting.
    pub group: String,
    pub flush_interval: Duration,
    pub max_buffered_rows: usize,
    pub on_data_loss: DataLossPolicy,
    /// Offsets per partition within which a repeated record id is dropped
    /// (0: off).
    pub dedup_window: u64,
}

impl From<&LakeConfig> for RawToLakeOptions {
    fn from(config: &LakeConfig) -> Self {
        RawToLakeOptions {
            job: "raw".to_string(),
            group: "logpipe-lake".to_string(),
            flush_interval: config.flush_interval,
            max_buffered_rows: config.max_buffered_rows,
            on_data_loss: config.on_data_loss,
            dedup_window: config.dedup_window,
        }
    }
}

impl Default for RawToLakeOptions {
    fn default() -> Self {
        RawToLakeOptions::from(&LakeConfig::default())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(
        "{0}. Set lake.on_data_loss = \"skip_ahead\" to continue from the oldest kept record (the lost range is counted in logpipe_lake_records_lost_total)"
    )]
    DataLoss(BusError),
    #[error("rolling forward commit {seq}: {reason}")]
    RollForward { seq: u64, reason: String },
    #[error("the {job} job's checkpointed state is unreadable: {reason}")]
    BadState { job: String, reason: String },
    #[error(
        "the {job} job could not rebuild its duplicate check from the bus: {reason} (lake.dedup_window = 0 turns the check off)"
    )]
    WarmUp { job: String, reason: String },
}

impl StreamError {
    /// Whether starting the job again from its last lake commit can get
    /// past this: the broker did not answer or refused for now, or did not
    /// return the records of a warm-up or roll-forward in time (see
    /// `restart`).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StreamError::Bus(BusError::Kafka(_) | BusError::Busy(_))
                | StreamError::WarmUp { .. }
                | StreamError::RollForward { .. }
        )
    }
}

/// The newest commit this process knows of.
#[derive(Debug, Default)]
struct Chain {
    seq: u64,
    /// Where each partition resumes (all partitions any member committed).
    offsets: Offsets,
}

/// Where the job stands: the commit chain, what it read since its last
/// commit, where each partition it holds resumes, and its duplicate check.
struct Reading {
    chain: Chain,
    buffer: Buffer,
    positions: Offsets,
    dedups: Dedups,
}

enum Flushed {
    Committed,
    /// Another member committed partitions this step read.
    Fenced,
}

/// The raw → lake job.
pub struct RawToLake {
    bus: Arc<dyn Bus>,
    lake: Lake,
    options: RawToLakeOptions,
}

/// Validation on the consuming side: structure only. The future-time check
/// depends on the clock and would make a roll-forward non-deterministic;
/// the collector already applied it.
fn consumer_limits() -> ValidationLimits {
    ValidationLimits {
        max_field_bytes: usize::MAX,
        max_future_skew_secs: i64::MAX / 1_000_000,
        now_micros: 0,
    }
}

/// The records of one step, grouped for writing.
#[derive(Default)]
struct Buffer {
    builders: BTreeMap<(RecordKind, HourPartition), BatchBuilder>,
    ranges: Ranges,
    rows: usize,
    invalid: u64,
    /// Second copies of a record not written (a client's retry).
    duplicates: u64,
    /// When the first record of this step arrived.
    since: Option<Instant>,
}

/// A consumed record and the result of validating it (`None`: a topic this
/// job does not write).
type Parsed = (ConsumedRecord, Option<Result<Record, String>>);

/// The per-partition map of `topic`, created when missing. Runs per record:
/// looking up first avoids allocating the topic name every time.
pub(crate) fn partitions_of<'a, V>(
    map: &'a mut BTreeMap<String, BTreeMap<u32, V>>,
    topic: &str,
) -> &'a mut BTreeMap<u32, V> {
    if !map.contains_key(topic) {
        map.insert(topic.to_string(), BTreeMap::new());
    }
    map.get_mut(topic).expect("inserted above")
}

fn parse_one(record: &ConsumedRecord) -> Option<Result<Record, String>> {
    let kind = RecordKind::of_topic(&record.topic)?;
    Some(
        std::str::from_utf8(&record.value)
            .map_err(|e| format!("value is not UTF-8: {e}"))
            .and_then(|text| {
                Record::parse(kind, text, &consumer_limits()).map_err(|e| e.to_string())
            }),
    )
}

/// Parsing is most of the job's CPU: it runs on the blocking pool, split over
/// two threads (this machine class has two cores; the collector's parsing
/// already runs in parallel on the same pool), and keeps the input order.
async fn parse_all(records: Vec<ConsumedRecord>) -> Result<Vec<Parsed>, StreamError> {
    const PARALLEL_FROM_RECORDS: usize = 2048;
    tokio::task::spawn_blocking(move || {
        let parse = |chunk: Vec<ConsumedRecord>| -> Vec<Parsed> {
            chunk
                .into_iter()
                .map(|record| {
                    let parsed = parse_one(&record);
                    (record, parsed)
                })
                .collect()
        };
        if records.len() < PARALLEL_FROM_RECORDS {
            return parse(records);
        }
        let mut first = records;
        let second = first.split_off(first.len() / 2);
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| parse(second));
            let mut out = parse(first);
            out.extend(handle.join().unwrap_or_default());
            out
        })
    })
    .await
    .map_err(|e| StreamError::Lake(LakeError::Task(e.to_string())))
}

impl Buffer {
    /// Adds the next record of its partition; one that `dedups` finds to be
    /// a second copy only moves the range on.
    fn add(
        &mut self,
        record: &ConsumedRecord,
        parsed: Option<Result<Record, String>>,
        dedups: &mut Dedups,
    ) -> Result<(), StreamError> {
        self.since.get_or_insert_with(Instant::now);
        let topic: &str = &record.topic;
        let range = partitions_of(&mut self.ranges, topic)
            .entry(record.partition)
            .or_insert((record.offset, record.offset));
        range.1 = record.offset + 1;
        let (Some(parsed), Some(kind)) = (parsed, RecordKind::of_topic(topic)) else {
            return Ok(());
        };
        if dedups.is_repeat(record) {
            self.duplicates += 1;
            metrics().lake_records_duplicate.add(kind, 1);
            return Ok(());
        }
        match parsed {
            Ok(parsed) => {
                let hour = HourPartition::of_micros(parsed.timestamp_micros());
                self.builders
                    .entry((kind, hour))
                    .or_insert_with(|| BatchBuilder::new(kind))
                    .append(&parsed)
                    .map_err(LakeError::from)?;
                self.rows += 1;
            }
            Err(reason) => {
                self.invalid += 1;
                metrics().lake_records_invalid.add(kind, 1);
                if self.invalid <= INVALID_LOGGED_PER_FLUSH {
                    tracing::warn!(
                        topic,
                        partition = record.partition,
                        offset = record.offset,
                        %reason,
                        "skipping an invalid record on the bus (produced by another client?)"
                    );
                }
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    fn take_groups(&mut self) -> Result<FlushGroups, StreamError> {
        let mut groups = FlushGroups::new();
        for (key, mut builder) in std::mem::take(&mut self.builders) {
            groups.insert(key, builder.finish().map_err(LakeError::from)?);
        }
        Ok(groups)
    }
}

impl RawToLake {
    pub fn new(bus: Arc<dyn Bus>, lake: Lake, options: RawToLakeOptions) -> RawToLake {
        RawToLake { bus, lake, options }
    }

    fn topics() -> Vec<&'static str> {
        RecordKind::ALL.iter().map(|kind| kind.topic()).collect()
    }

    /// Runs until `shutdown` turns true, then drains, commits and returns.
    /// Starts again from the last commit after a transient bus failure
    /// (see `restart`).
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), StreamError> {
        run_restarting(&self, shutdown).await
    }
}

impl Restartable for RawToLake {
    fn job(&self) -> &str {
        &self.options.job
    }

    async fn attempt(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), StreamError> {
        self.roll_forward_all().await?;
        let chain = self.chain().await?;
        let mut consumer = self
            .bus
            .consumer(&self.options.group, &Self::topics())
            .await?;
        let read = self.read(consumer.as_mut(), chain, shutdown).await;
        closed_on_error(consumer.as_mut(), read).await
    }
}

impl RawToLake {
    /// Reads from `chain` on until `shutdown`, then drains and commits.
    async fn read(
        &self,
        consumer: &mut dyn Consumer,
        chain: Chain,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StreamError> {
        let job = self.options.job.as_str();
        // The embedded bus assigns every partition now; a Kafka group
        // assigns them in the first polls (a `Rebalance`).
        let positions = resume(consumer, &chain.offsets)?;
        tracing::info!(job, seq = chain.seq, ?positions, "raw→lake job resumes");
        let mut dedups = Dedups::new(self.options.dedup_window);
        dedups.warm_up(&*self.bus, job, &positions).await?;
        let mut reading = Reading {
            chain,
            buffer: Buffer::default(),
            positions,
            dedups,
        };

        let mut poller = Poller::new("raw", self.options.on_data_loss);
        loop {
            let wait = match reading.buffer.since {
                Some(since) => self.options.flush_interval.saturating_sub(since.elapsed()),
                None => self.options.flush_interval,
            };
            let records = match poller
                .poll(consumer, wait, shutdown, &mut reading.positions)
                .await?
            {
                Polled::Records(records) => records,
                Polled::ShutdownStarted => continue,
                Polled::Skipped { topic, lost } => {
                    if let Some(kind) = RecordKind::of_topic(&topic) {
                        metrics().lake_records_lost.add(kind, lost);
                    }
                    continue;
                }
                Polled::Rebalance(event) => {
                    self.rebalance(event, consumer, &mut reading).await?;
                    continue;
                }
            };
            let drained = records.is_empty();
            let Reading {
                buffer,
                positions,
                dedups,
                ..
            } = &mut reading;
            for (record, parsed) in parse_all(records).await? {
                buffer.add(&record, parsed, dedups)?;
                partitions_of(positions, &record.topic).insert(record.partition, record.offset + 1);
            }
            self.report_lag(positions);
            let due = buffer
                .since
                .is_some_and(|since| since.elapsed() >= self.options.flush_interval);
            let finishing = poller.finishing(drained);
            if !buffer.is_empty()
                && (due || finishing || buffer.rows >= self.options.max_buffered_rows)
            {
                self.flush_or_restart(consumer, &mut reading).await?;
            }
            if finishing {
                consumer.close().await;
                tracing::info!(
                    job,
                    seq = reading.chain.seq,
                    "raw→lake job drained and committed"
                );
                return Ok(());
            }
        }
    }

    /// The newest commit of the job (sequence 0 and no offsets when none).
    async fn chain(&self) -> Result<Chain, StreamError> {
        Ok(match self.lake.latest_commit(&self.options.job).await? {
            Some(record) => Chain {
                seq: record.seq,
                offsets: record.offsets,
            },
            None => Chain::default(),
        })
    }

    /// Hands partitions over: commits what was read before a revoke; starts
    /// assigned partitions at the offsets of the newest commit (whoever
    /// made it), after completing any commit a dead member left half-done.
    async fn rebalance(
        &self,
        event: Rebalance,
        consumer: &mut dyn Consumer,
        reading: &mut Reading,
    ) -> Result<(), StreamError> {
        match event {
            Rebalance::Revoke(revoked) => {
                if !reading.buffer.is_empty() {
                    self.flush_or_restart(consumer, reading).await?;
                }
                let Reading {
                    positions, dedups, ..
                } = reading;
                for tp in &revoked {
                    if let Some(partitions) = positions.get_mut(&tp.topic) {
                        partitions.remove(&tp.partition);
                    }
                    dedups.forget(&tp.topic, tp.partition);
                }
                positions.retain(|_, partitions| !partitions.is_empty());
                consumer.rebalance_done(Vec::new())?;
            }
            Rebalance::Assign(assigned) => {
                let Reading {
                    chain,
                    positions,
                    dedups,
                    ..
                } = reading;
                self.roll_forward_all().await?;
                *chain = self.chain().await?;
                let mut committed = Offsets::new();
                let starts: Vec<(TopicPartition, Option<u64>)> = assigned
                    .into_iter()
                    .map(|tp| {
                        let start = offset_of(&chain.offsets, &tp);
                        if let Some(start) = start {
                            partitions_of(positions, &tp.topic).insert(tp.partition, start);
                            partitions_of(&mut committed, &tp.topic).insert(tp.partition, start);
                        } else {
                            // Read from the oldest record: nothing before it.
                            dedups.forget(&tp.topic, tp.partition);
                        }
                        (tp, start)
                    })
                    .collect();
                tracing::info!(
                    job = self.options.job,
                    seq = chain.seq,
                    ?starts,
                    "raw→lake job takes partitions"
                );
                // Answer the group first: the warm-up reads for seconds
                // under load, and the group waits for the answer. The job
                // polls the new partitions only after the warm-up.
                consumer.rebalance_done(starts)?;
                dedups
                    .warm_up(&*self.bus, &self.options.job, &committed)
                    .await?;
            }
        }
        Ok(())
    }

    /// Flushes; if another member committed these partitions meanwhile
    /// (this process lost them without noticing), drops the step and
    /// re-reads every assigned partition from the newest commit.
    async fn flush_or_restart(
        &self,
        consumer: &mut dyn Consumer,
        reading: &mut Reading,
    ) -> Result<(), StreamError> {
        let Reading {
            chain,
            buffer,
            positions,
            dedups,
        } = reading;
        match self.flush(chain, buffer).await? {
            Flushed::Committed => report_progress(consumer, positions).await,
            Flushed::Fenced => {
                metrics().lake_steps_fenced.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    job = self.options.job,
                    seq = chain.seq,
                    "another member committed partitions this process was reading; \
                     dropping the step and re-reading from the newest commit"
                );
                *positions = resume(consumer, &chain.offsets)?;
                dedups
                    .warm_up(&*self.bus, &self.options.job, positions)
                    .await?;
            }
        }
        Ok(())
    }

    fn report_lag(&self, positions: &Offsets) {
        for kind in RecordKind::ALL {
            let Ok(ends) = self.bus.end_offsets(kind.topic()) else {
                continue;
            };
            // The partitions this process reads (all of them on the
            // embedded bus; its share in a Kafka group).
            let Some(consumed) = positions.get(kind.topic()) else {
                continue;
            };
            let lag: u64 = consumed
                .iter()
                .filter_map(|(p, at)| ends.get(*p as usize).map(|end| end.saturating_sub(*at)))
                .sum();
            metrics().bus_consumer_lag.set(kind, lag as i64);
        }
    }

    async fn flush(&self, chain: &mut Chain, buffer: &mut Buffer) -> Result<Flushed, StreamError> {
        let groups = buffer.take_groups()?;
        let ranges = std::mem::take(&mut buffer.ranges);
        let invalid = buffer.invalid;
        let duplicates = buffer.duplicates;
        let rows = buffer.rows;
        *buffer = Buffer::default();
        let encoded = self
            .lake
            .encode_batches(groups.values().cloned().collect())
            .await?;
        let mut record = CommitRecord {
            job: self.options.job.clone(),
            seq: 0,
            ranges,
            offsets: Offsets::new(),
            files: Vec::new(),
            invalid_records: invalid,
            duplicate_records: duplicates,
            dedup_window: self.options.dedup_window,
            committed_at: micros_to_rfc3339(now_micros()),
            state: None,
        };
        loop {
            // The step goes after the newest commit known; its offsets are
            // that commit's, moved on for the partitions this step read.
            record.seq = chain.seq + 1;
            record.files = Lake::plan_files(&self.options.job, record.seq, &groups);
            record.offsets = chain.offsets.clone();
            for (topic, partitions) in &record.ranges {
                for (partition, (_, end)) in partitions {
                    partitions_of(&mut record.offsets, topic).insert(*partition, *end);
                }
            }
            match self.lake.commit(&record, encoded.clone()).await {
                Ok(()) => {
                    self.count_commit(&record, rows);
                    chain.seq = record.seq;
                    chain.offsets = record.offsets;
                    return Ok(Flushed::Committed);
                }
                Err(LakeError::CommitTaken { .. }) => {
                    // Another member of the group committed meanwhile.
                    *chain = self.chain().await?;
                    let fenced = record.ranges.iter().any(|(topic, partitions)| {
                        partitions.iter().any(|(partition, (start, _))| {
                            chain
                                .offsets
                                .get(topic)
                                .and_then(|p| p.get(partition))
                                .is_some_and(|committed| committed > start)
                        })
                    });
                    if fenced {
                        return Ok(Flushed::Fenced);
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn count_commit(&self, record: &CommitRecord, rows: usize) {
        for file in &record.files {
            if let Some(kind) = RecordKind::ALL
                .into_iter()
                .find(|k| k.table() == file.table)
            {
                metrics().lake_rows_committed.add(kind, file.rows);
                metrics().lake_files_committed.add(kind, 1);
            }
        }
        metrics().lake_commits.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            seq = record.seq,
            rows,
            files = record.files.len(),
            "lake commit"
        );
    }

    /// Completes every kept commit whose files are incomplete (a member
    /// died between its commit record and its last file).
    async fn roll_forward_all(&self) -> Result<(), StreamError> {
        for (record, missing) in self.lake.incomplete_commits(&self.options.job).await? {
            self.roll_forward(&record, &missing).await?;
        }
        Ok(())
    }

    /// Completes a commit whose files did not all reach the store: re-reads
    /// exactly its bus ranges and rebuilds the same files.
    async fn roll_forward(
        &self,
        record: &CommitRecord,
        missing: &[CommittedFile],
    ) -> Result<(), StreamError> {
        tracing::warn!(
            seq = record.seq,
            missing = missing.len(),
            "the last lake commit was interrupted; rebuilding its missing files from the bus"
        );
        let fail = |reason: String| StreamError::RollForward {
            seq: record.seq,
            reason,
        };
        // The same copies are dropped as when the commit was made.
        let mut dedups = Dedups::new(record.dedup_window);
        let starts: Offsets = record
            .ranges
            .iter()
            .map(|(topic, partitions)| {
                let starts = partitions.iter().map(|(p, (start, _))| (*p, *start));
                (topic.clone(), starts.collect())
            })
            .collect();
        dedups.warm_up(&*self.bus, &record.job, &starts).await?;
        let mut buffer = Buffer::default();
        let how = RangeRead {
            limit: Duration::from_secs(60),
            from_oldest: false,
            idle_polls: None,
        };
        read_ranges(&*self.bus, &record.ranges, how, fail, |consumed| {
            buffer.add(consumed, parse_one(consumed), &mut dedups)
        })
        .await?;
        let groups = buffer.take_groups()?;
        let files = Lake::plan_files(&record.job, record.seq, &groups);
        if files != record.files {
            return Err(StreamError::Lake(LakeError::RollForwardMismatch {
                seq: record.seq,
                expected: format!("{:?}", record.files),
                found: format!("{files:?}"),
            }));
        }
        let encoded = self.lake.encode(groups).await?;
        let put = self.lake.put_missing(files, encoded, missing).await?;
        tracing::info!(
            seq = record.seq,
            files = put,
            "interrupted lake commit completed"
        );
        Ok(())
    }
}
