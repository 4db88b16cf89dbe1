//! Streaming jobs written in SQL: a windowed aggregation over `logs` or
//! `events` (the subset of `logpipe_query::stream_sql`, docs/jobs.md) into a
//! lake table of its own, exactly once across kill -9.
//!
//! The job works as the built-in window job does ([`crate::windows`]):
//! every step (one second) it writes a lake commit record holding the bus
//! offsets it consumed *and* its whole state (the open windows with their
//! accumulators, the event clock) *and* the step's output (the windows
//! that closed), then the output's Parquet files. A restart resumes from
//! the newest commit record and completes its files if they are missing:
//! state and offsets belong together, so no record is counted twice and no
//! window is lost or written twice.
//!
//! One process runs a job (it reads every partition, as the window job
//! does); its rows go to the lake only.
//!
//! | file | what |
//! |---|---|
//! | `aggregator.rs` | the open windows and their accumulators |
//! | `output.rs` | closed windows as rows of the job's table |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use logpipe_bus::Bus;
use logpipe_config::DataLossPolicy;
use logpipe_core::record::{Record, RecordKind};
use logpipe_core::stream_sql::{Scalar, StreamSource, StreamSpec};
use logpipe_core::tables::TableDef;
use logpipe_core::time::{micros_to_rfc3339, now_micros};
use logpipe_core::topics;
use logpipe_lake::{CommitRecord, Lake, LakeError, Offsets, TableGroups, plan_files};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::StreamError;
use crate::raw::parse::consumer_limits;
use crate::runtime::dedup::Dedups;
use crate::runtime::poller::{Polled, Poller};
use crate::runtime::positions::{
    closed_on_error, partitions_of, read_through, report_progress, resume,
};
use crate::runtime::{Job, Shutdown, clock, run_restarting};

mod aggregator;
mod output;

use aggregator::{Group, Snapshot, SqlAggregator};

/// One streaming SQL job.
#[derive(Debug, Clone)]
pub struct SqlJobOptions {
    /// Its name: its commit chain, its table, its files.
    pub name: String,
    pub spec: Arc<StreamSpec>,
    /// Its output table (`streams/NAME` unless the header says otherwise).
    pub table: &'static TableDef,
    /// How long after a window's end records for it still count.
    pub allowed_lateness: Duration,
    /// With no new record for this long, event time follows the clock so
    /// the last windows close.
    pub idle_close: Duration,
    pub step_interval: Duration,
    /// Second copies of a record within this many offsets are not counted
    /// (`lake.dedup_window`, as the lake does).
    pub dedup_window: u64,
    pub on_data_loss: DataLossPolicy,
}

/// What a commit record holds for this job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct JobState {
    windows: Snapshot,
    /// This step's output.
    closed: Vec<Group>,
    step_micros: i64,
}

pub struct SqlJob {
    bus: Arc<dyn Bus>,
    lake: Lake,
    options: SqlJobOptions,
    schema: SchemaRef,
}

impl SqlJob {
    pub fn new(bus: Arc<dyn Bus>, lake: Lake, options: SqlJobOptions) -> SqlJob {
        let schema = output::schema(&options.spec);
        SqlJob {
            bus,
            lake,
            options,
            schema,
        }
    }

    /// Runs until `shutdown` turns true, then drains, commits and returns.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), StreamError> {
        run_restarting(&self, shutdown).await
    }

    fn topic(&self) -> &'static str {
        match self.options.spec.source {
            StreamSource::Logs => topics::LOGS_RAW,
            StreamSource::Events => topics::EVENTS_ACTIVITY,
        }
    }

    fn groups(&self, closed: &[Group]) -> Result<TableGroups, StreamError> {
        output::output_groups(&self.options.spec, &self.schema, self.options.table, closed)
            .map_err(|e| StreamError::from(LakeError::from(e)))
    }

    async fn commit(
        &self,
        seq: u64,
        state: &JobState,
        groups: &TableGroups,
        positions: &Offsets,
    ) -> Result<(), StreamError> {
        let job = &self.options.name;
        let record = CommitRecord {
            job: job.clone(),
            seq,
            ranges: BTreeMap::new(),
            offsets: positions.clone(),
            files: plan_files(job, seq, groups),
            invalid_records: 0,
            duplicate_records: 0,
            dedup_window: 0,
            committed_at: micros_to_rfc3339(state.step_micros),
            state: Some(
                serde_json::to_value(state).map_err(|e| StreamError::BadState {
                    job: job.clone(),
                    reason: e.to_string(),
                })?,
            ),
        };
        let encoded = self
            .lake
            .encode_batches(groups.values().cloned().collect())
            .await?;
        self.lake.commit(&record, encoded).await?;
        Ok(())
    }
}

impl Job for SqlJob {
    type Error = StreamError;

    fn name(&self) -> &str {
        &self.options.name
    }

    async fn attempt(&self, shutdown: &mut Shutdown) -> Result<(), StreamError> {
        let job = self.options.name.clone();
        let latest = self.lake.latest_commit(&job).await?;
        let state: JobState = match latest.as_ref().and_then(|r| r.state.clone()) {
            Some(value) => serde_json::from_value(value).map_err(|e| StreamError::BadState {
                job: job.clone(),
                reason: e.to_string(),
            })?,
            None => JobState::default(),
        };
        let mut seq = latest.as_ref().map(|r| r.seq).unwrap_or(0);
        if let Some(record) = &latest {
            // The last step's files may be missing: rebuild them from the
            // commit record's output.
            let missing = self.lake.missing_files(record).await?;
            if !missing.is_empty() {
                tracing::warn!(
                    job,
                    seq,
                    files = missing.len(),
                    "completing the job's interrupted commit"
                );
                let groups = self.groups(&state.closed)?;
                let files = plan_files(&job, seq, &groups);
                let encoded = self
                    .lake
                    .encode_batches(groups.values().cloned().collect())
                    .await?;
                self.lake.put_missing(files, encoded, &missing).await?;
            }
        }
        let lateness = self.options.allowed_lateness.as_micros() as i64;
        let mut aggregator =
            SqlAggregator::restore(self.options.spec.clone(), lateness, state.windows);
        let topic = self.topic();
        let mut consumer = self.bus.reader(&format!("logpipe-{job}"), &[topic]).await?;
        let read: Result<(), StreamError> = async {
            let committed = latest.map(|r| r.offsets).unwrap_or_default();
            let mut positions = resume(consumer.as_mut(), &committed)?;
            let mut dedups = Dedups::new(self.options.dedup_window);
            dedups.warm_up(&*self.bus, &job, &positions).await?;
            tracing::info!(job, seq, open_groups = aggregator.open_groups(), "streaming SQL job resumes");
            let kind = RecordKind::of_topic(topic);
            let limits = consumer_limits();
            let mut committed_positions = positions.clone();
            let mut next_step = Instant::now() + self.options.step_interval;
            let mut last_record = Instant::now();
            let mut last_step = Instant::now();
            let mut poller = Poller::new("sql job", self.options.on_data_loss);
            let mut invalid = 0u64;
            let mut partition_max: BTreeMap<u32, i64> = BTreeMap::new();
            loop {
                let wait = next_step.saturating_duration_since(Instant::now());
                let records = match poller
                    .poll(consumer.as_mut(), wait, shutdown, &mut positions)
                    .await?
                {
                    Polled::Records(records) => records,
                    Polled::ShutdownStarted | Polled::Skipped { .. } => continue,
                    Polled::Rebalance(_) => {
                        consumer.rebalance_done(Vec::new())?;
                        continue;
                    }
                };
                let drained = records.is_empty();
                if !drained {
                    last_record = Instant::now();
                }
                for record in &records {
                    partitions_of(&mut positions, &record.topic).insert(record.partition, record.offset + 1);
                    if dedups.is_repeat(record) {
                        continue;
                    }
                    let parsed = kind.and_then(|kind| {
                        let text = std::str::from_utf8(&record.value).ok()?;
                        Record::parse(kind, text, &limits).ok()
                    });
                    let Some(parsed) = parsed else {
                        invalid += 1;
                        continue;
                    };
                    let micros = match logpipe_core::stream_sql::Row::get(&parsed, "timestamp") {
                        Scalar::Int(micros) => micros,
                        _ => continue,
                    };
                    if let Some(micros) = aggregator.observe(&parsed, micros) {
                        let seen = partition_max.entry(record.partition).or_insert(i64::MIN);
                        *seen = (*seen).max(micros);
                    }
                }
                if let Some(limit) = clock::limit(
                    &*self.bus,
                    topic,
                    &read_through(consumer.as_ref(), &positions),
                    &partition_max,
                ) {
                    aggregator.advance_to(limit);
                }
                let finishing = poller.finishing(drained);
                if Instant::now() < next_step && !finishing {
                    continue;
                }
                next_step = Instant::now() + self.options.step_interval;
                if invalid > 0 {
                    tracing::warn!(job, invalid, "records the job could not read were skipped (the raw→lake job reports them)");
                    invalid = 0;
                }
                let since_last_step = last_step.elapsed();
                last_step = Instant::now();
                if last_record.elapsed() >= self.options.idle_close && !finishing {
                    aggregator.advance_idle(since_last_step.as_micros() as i64);
                }
                let closed = aggregator.close_ready();
                if positions != committed_positions || !closed.is_empty() {
                    seq += 1;
                    let step = JobState {
                        windows: aggregator.snapshot(),
                        closed,
                        step_micros: now_micros(),
                    };
                    let groups = self.groups(&step.closed)?;
                    self.commit(seq, &step, &groups, &positions).await?;
                    committed_positions = positions.clone();
                    report_progress(consumer.as_mut(), &positions).await;
                }
                if finishing {
                    consumer.close().await;
                    tracing::info!(job, seq, late = aggregator.late_records(), "streaming SQL job drained and committed");
                    return Ok(());
                }
            }
        }
        .await;
        closed_on_error(consumer.as_mut(), read).await
    }
}
