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

use std::sync::Arc;
use std::time::Duration;

use logpipe_bus::{Bus, Consumer, Rebalance, TopicPartition};
use logpipe_config::{Config, DataLossPolicy, Resolved};
use logpipe_core::record::RecordKind;
use logpipe_lake::{Chain, Lake, Offsets, Step, StepOutcome};

use crate::error::StreamError;
use crate::runtime::dedup::Dedups;
use crate::runtime::poller::{Polled, Poller};
use crate::runtime::positions::{
    closed_on_error, offset_of, partitions_of, read_through, report_progress, resume,
};
use crate::runtime::{Job, Shutdown, run_restarting};

mod buffer;
pub mod metrics;
pub(crate) mod parse;
mod roll_forward;

use buffer::Buffer;
use metrics::raw_metrics;

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

impl RawToLakeOptions {
    /// The options the resolved configuration describes: `[lake]`, and the
    /// group [`Resolved::raw_group`] chose.
    pub fn from_config(resolved: &Resolved) -> RawToLakeOptions {
        let lake = &resolved.config.lake;
        RawToLakeOptions {
            job: "raw".to_string(),
            group: resolved.raw_group.clone(),
            flush_interval: lake.flush_interval,
            max_buffered_rows: lake.max_buffered_rows,
            on_data_loss: lake.on_data_loss,
            dedup_window: lake.dedup_window,
        }
    }
}

impl Default for RawToLakeOptions {
    fn default() -> Self {
        RawToLakeOptions::from_config(&Config::default().resolve())
    }
}

/// Where the job stands: the commit chain, what it read since its last
/// commit, where each partition it holds resumes, and its duplicate check.
struct Reading {
    chain: Chain,
    buffer: Buffer,
    positions: Offsets,
    dedups: Dedups,
}

/// The raw → lake job.
pub struct RawToLake {
    bus: Arc<dyn Bus>,
    lake: Lake,
    options: RawToLakeOptions,
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
    pub async fn run(self, shutdown: Shutdown) -> Result<(), StreamError> {
        run_restarting(&self, shutdown).await
    }
}

impl Job for RawToLake {
    type Error = StreamError;

    fn name(&self) -> &str {
        &self.options.job
    }

    async fn attempt(&self, shutdown: &mut Shutdown) -> Result<(), StreamError> {
        self.roll_forward_all().await?;
        let chain = self.lake.chain(&self.options.job).await?;
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
        shutdown: &mut Shutdown,
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
                        raw_metrics().records_lost.add(&[kind.table()], lost);
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
            for record in &records {
                partitions_of(positions, &record.topic).insert(record.partition, record.offset + 1);
            }
            buffer.add_all(records, dedups).await?;
            self.report_lag(consumer, &read_through(consumer, positions));
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
                *chain = self.lake.chain(&self.options.job).await?;
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
            StepOutcome::Committed(_) => report_progress(consumer, positions).await,
            StepOutcome::Fenced => {
                raw_metrics().steps_fenced.inc();
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

    fn report_lag(&self, consumer: &dyn Consumer, positions: &Offsets) {
        let group = self.options.group.as_str();
        let assigned = consumer.assignment();
        let mut reported: Vec<(String, String)> = Vec::new();
        for kind in RecordKind::ALL {
            let topic = kind.topic();
            let Ok(ends) = self.bus.end_offsets(topic) else {
                continue;
            };
            // The oldest kept offsets, asked for only when a held partition
            // has records but no position yet (nothing read, no commit).
            let mut starts: Option<Vec<u64>> = None;
            // The partitions this process holds (all of them on the
            // embedded bus; its share in a Kafka group), each from where
            // it has read, or where it will start reading.
            for tp in assigned.iter().filter(|tp| tp.topic == topic) {
                let Some(&end) = ends.get(tp.partition as usize) else {
                    continue;
                };
                let at = match offset_of(positions, tp) {
                    Some(at) => at,
                    None if end == 0 => 0,
                    None => {
                        if starts.is_none() {
                            starts = consumer.start_offsets(topic).ok();
                        }
                        let Some(start) =
                            starts.as_ref().and_then(|s| s.get(tp.partition as usize))
                        else {
                            continue;
                        };
                        *start
                    }
                };
                let partition = tp.partition.to_string();
                raw_metrics()
                    .consumer_lag
                    .set(&[group, topic, &partition], end.saturating_sub(at) as f64);
                reported.push((topic.to_string(), partition));
            }
        }
        // A partition the group gave to another member is that member's to
        // report: summing over processes must not count it twice.
        raw_metrics().consumer_lag.retain(|labels| {
            labels[0] != group
                || reported
                    .iter()
                    .any(|(topic, partition)| labels[1] == *topic && labels[2] == *partition)
        });
    }

    /// Commits what `buffer` holds as the next step of the chain.
    async fn flush(
        &self,
        chain: &mut Chain,
        buffer: &mut Buffer,
    ) -> Result<StepOutcome, StreamError> {
        let groups = buffer.take_groups()?;
        let step = Step {
            job: self.options.job.clone(),
            ranges: std::mem::take(&mut buffer.ranges),
            groups,
            invalid_records: buffer.invalid,
            duplicate_records: buffer.duplicates,
            dedup_window: self.options.dedup_window,
        };
        *buffer = Buffer::default();
        Ok(self.lake.commit_step(chain, step).await?)
    }
}
